"""Attention masks and the joint layout against the rules written out by hand (numpy only, fast).

`tests/test_loss_masking.py` checks visibility by dependency through the real model; this file
pins the mask builders themselves on small literal cases, so a mistake in a rule is caught in
milliseconds (and by the mutation run, `make mutation`). Conventions stated here:

- a query sees every key of a coarser scale, never one of a finer scale;
- inside its scale: "all" every key, "group" keys of its own group, "ordered" keys of its own
  group and of smaller group ids;
- the joint sequence holds, per scale, the satellite block then the map block, row-major;
- a directed (translation) row puts its condition half first inside each scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.models import layout, masks

T, F = True, False


def test_all_mode_on_a_literal_sequence():
    # scales of 4 tokens: 0 | 1 1 | 2
    want = np.array([[T, F, F, F],
                     [T, T, T, F],
                     [T, T, T, F],
                     [T, T, T, T]])
    np.testing.assert_array_equal(masks.block_causal_mask([0, 1, 1, 2]), want)
    assert masks.block_causal_mask([0, 1, 1, 2]).dtype == bool


def test_group_and_ordered_modes_on_a_literal_sequence():
    scale = [0, 0, 1, 1, 1, 1]
    group = [0, 1, 0, 0, 1, 1]
    group_want = np.array([
        [T, F, F, F, F, F],
        [F, T, F, F, F, F],
        [T, T, T, T, F, F],
        [T, T, T, T, F, F],
        [T, T, F, F, T, T],
        [T, T, F, F, T, T]])
    ordered_want = group_want.copy()
    ordered_want[1, 0] = True       # group 1 sees group 0 of its scale ...
    ordered_want[4:, 2:4] = True    # ... at every scale
    np.testing.assert_array_equal(
        masks.block_causal_mask(scale, q_group=group, within_scale="group"), group_want)
    np.testing.assert_array_equal(
        masks.block_causal_mask(scale, q_group=group, within_scale="ordered"), ordered_want)
    # the default mode is "all": groups are then irrelevant
    np.testing.assert_array_equal(masks.block_causal_mask(scale, q_group=group),
                                  masks.block_causal_mask(scale))


def test_queries_and_keys_of_different_sequences():
    # a cached decoding step: the queries are scale 1, the keys scales 0 and 1
    q_scale, k_scale = [1, 1], [0, 1, 1, 2]
    q_group, k_group = [0, 1], [0, 0, 1, 1]
    np.testing.assert_array_equal(masks.block_causal_mask(q_scale, k_scale),
                                  [[T, T, T, F], [T, T, T, F]])
    np.testing.assert_array_equal(
        masks.block_causal_mask(q_scale, k_scale, q_group=q_group, k_group=k_group,
                                within_scale="group"),
        [[T, T, F, F], [T, F, T, F]])
    np.testing.assert_array_equal(
        masks.block_causal_mask(q_scale, k_scale, q_group=q_group, k_group=k_group,
                                within_scale="ordered"),
        [[T, T, F, F], [T, T, T, F]])


@pytest.mark.parametrize("within", ["group", "ordered"])
def test_group_modes_need_group_ids(within):
    with pytest.raises(AssertionError, match="needs group ids"):
        masks.block_causal_mask([0, 1], within_scale=within)


def test_unknown_mode_is_an_invariant_violation():
    with pytest.raises(AssertionError):
        masks.block_causal_mask([0, 1], q_group=[0, 0], within_scale="causal")


@pytest.mark.parametrize("within", masks.WITHIN_SCALE_CHOICES)
def test_block_causal_description_builds_the_same_mask_in_graph(within):
    scale = np.array([0, 0, 1, 1, 1, 1])
    group = np.array([0, 1, 0, 0, 1, 1])
    want = masks.block_causal_mask(scale, q_group=group, within_scale=within)
    desc = masks.BlockCausal(jnp.asarray(scale), q_group=jnp.asarray(group), within_scale=within)
    got = jax.jit(lambda d: d.to_mask())(desc)
    assert got.shape == (1, 1, 6, 6) and got.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(got[0, 0]), want)
    # a per-batch description (B, L): one mask per row, broadcast over heads
    other = np.array([1, 0, 1, 1, 0, 0])
    batched = masks.BlockCausal(jnp.stack([scale, scale]), q_group=jnp.stack([group, other]),
                                within_scale=within)
    got = np.asarray(batched.to_mask())
    assert got.shape == (2, 1, 6, 6)
    np.testing.assert_array_equal(got[0, 0], want)
    np.testing.assert_array_equal(
        got[1, 0], masks.block_causal_mask(scale, q_group=other, within_scale=within))


def test_block_causal_keys_of_another_length():
    desc = masks.BlockCausal(jnp.array([1, 1]), k_scale=jnp.array([0, 1, 1, 2]),
                             q_group=jnp.array([0, 1]), k_group=jnp.array([0, 0, 1, 1]),
                             within_scale="group")
    np.testing.assert_array_equal(np.asarray(desc.to_mask())[0, 0],
                                  [[T, T, F, F], [T, F, T, F]])
    assert masks.BlockCausal(jnp.array([0])).within_scale == "all"


def test_var_mask_and_attention_shape():
    want = np.array([[T, F, F, F, F],
                     [T, T, T, T, T],
                     [T, T, T, T, T],
                     [T, T, T, T, T],
                     [T, T, T, T, T]])
    np.testing.assert_array_equal(masks.var_mask([1, 2]), want)
    m = masks.as_attention_mask(np.eye(3, dtype=np.int32))
    assert m.shape == (1, 1, 3, 3) and m.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(m[0, 0]), np.eye(3, dtype=bool))


# ---------------------------------------------------------------------------------- layout


def test_joint_layout_of_two_scales_written_out():
    lay = layout.joint_layout([1, 2])
    assert lay["half_len"] == 5 and lay["length"] == 10
    assert lay["begins"] == (0, 2)
    #                                s0 m0 | s1 ×4      | m1 ×4
    np.testing.assert_array_equal(lay["scale"], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(lay["modality"], [0, 1, 0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(lay["half_index"], [0, 0, 1, 2, 3, 4, 1, 2, 3, 4])
    np.testing.assert_array_equal(lay["half_scale"], [0, 1, 1, 1, 1])
    assert lay["scale"].dtype == np.int32 and lay["modality"].dtype == np.int32
    assert layout.SAT == 0 and layout.MAP == 1 and layout.MODALITIES == ("sat", "map")
    # cached and shared: nobody may write into it
    for name in ("scale", "modality", "half_index", "half_scale"):
        with pytest.raises(ValueError):
            lay[name][0] = 7
    assert layout.joint_layout((1, 2)) is lay


def _joint_rule(pn, within, lead=None):
    """The visibility of the joint sequence, written out position by position."""
    pos = []
    for k, p in enumerate(pn):
        for m in (layout.SAT, layout.MAP):
            pos += [(k, m)] * (p * p)
    L = len(pos)
    out = np.zeros((L, L), bool)
    for i, (si, mi) in enumerate(pos):
        for j, (sj, mj) in enumerate(pos):
            if sj < si:
                out[i, j] = True
            elif sj == si:
                if lead is not None and within != "all":
                    out[i, j] = mj == mi or mj == lead
                elif within == "all":
                    out[i, j] = True
                elif within == "group":
                    out[i, j] = mj == mi
                else:  # ordered: the map block also sees the satellite block
                    out[i, j] = mj <= mi
    return out


@pytest.mark.parametrize("within", masks.WITHIN_SCALE_CHOICES)
def test_joint_mask_follows_the_rule(within):
    np.testing.assert_array_equal(layout.joint_mask([1, 2, 3], within), _joint_rule((1, 2, 3), within))


def test_joint_mask_default_is_group():
    np.testing.assert_array_equal(layout.joint_mask([1, 2]), _joint_rule((1, 2), "group"))
    np.testing.assert_array_equal(layout.directed_mask([1, 2]), _joint_rule((1, 2), "group"))


@pytest.mark.parametrize("lead", [layout.SAT, layout.MAP])
@pytest.mark.parametrize("within", ["group", "ordered"])
def test_directed_mask_lets_the_target_see_the_condition_only(within, lead):
    got = layout.directed_mask([1, 2, 3], within, lead)
    np.testing.assert_array_equal(got, _joint_rule((1, 2, 3), within, lead))
    # the condition half never sees the target half of its own scale
    lay = layout.joint_layout([1, 2, 3])
    same = lay["scale"][:, None] == lay["scale"][None, :]
    cond_q = lay["modality"][:, None] == lead
    target_k = lay["modality"][None, :] != lead
    assert not np.any(got & same & cond_q & target_k)


def test_directed_mask_without_lead_or_with_all_is_the_joint_mask():
    for within in masks.WITHIN_SCALE_CHOICES:
        np.testing.assert_array_equal(layout.directed_mask([1, 2], within, None),
                                      layout.joint_mask([1, 2], within))
    np.testing.assert_array_equal(layout.directed_mask([1, 2], "all", layout.MAP),
                                  layout.joint_mask([1, 2], "all"))


def test_to_joint_and_back():
    pn = (1, 2)
    sat = np.arange(5)[None, :, None] + 100      # (1, 5, 1)
    mapp = np.arange(5)[None, :, None] + 200
    joint = np.asarray(layout.to_joint(jnp.asarray(sat), jnp.asarray(mapp), pn))
    np.testing.assert_array_equal(joint[0, :, 0], [100, 200, 101, 102, 103, 104, 201, 202, 203, 204])
    s, m = layout.from_joint(jnp.asarray(joint), pn)
    np.testing.assert_array_equal(np.asarray(s), sat)
    np.testing.assert_array_equal(np.asarray(m), mapp)
