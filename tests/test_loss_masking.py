"""Loss masking and GJSA visibility, checked by dependency through the real model and loss.

Nothing here reads a mask back. The expected visibility is written out from the rules (Eq. 10
and the `within_scale` modes, models/earthmapper.py) in `expected_visibility`, and compared with
which logits actually move when one input position moves (the Jacobian's zero pattern: masked
attention scores are replaced, so a forbidden path has an exactly-zero derivative). The loss
side probes the logits and SI predictions the real `loss_fn` sees: its gradient says which
positions count and how much each weighs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models import semantic
from earthmapper_jax.train import earthmapper_task as emt

PN = (1, 2, 3)
LH = sum(p * p for p in PN)
SAT, MAP = 0, 1
TOK_CFG = dict(ch=32, vocab_size=64, z_channels=8, image_size=24, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=PN)


def _perturb(params, seed, scale=0.05):
    # VAR's init leaves blocks near identity (gamma ~1e-5): move every weight off it
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def joint_positions():
    """(scale, modality, half index) of every joint position, written out from the layout rule
    (per scale the satellite block, then the map block, row-major)."""
    out = []
    begin = 0
    for k, p in enumerate(PN):
        for m in (SAT, MAP):
            out += [(k, m, begin + i) for i in range(p * p)]
        begin += p * p
    return out


def expected_visibility(within, lead=None):
    """(L, L) bool: may output i depend on the input at j. Coarser scales: always, of both
    modalities; finer: never; same scale: by `within` (joint rows) or, in a directed row, own
    half plus the condition half `lead` (the condition never sees the target)."""
    pos = joint_positions()
    L = len(pos)
    vis = np.zeros((L, L), bool)
    for i, (si, mi, _) in enumerate(pos):
        for j, (sj, mj, _) in enumerate(pos):
            if sj < si:
                vis[i, j] = True
            elif sj == si:
                if within == "all":
                    vis[i, j] = True
                elif lead is not None:
                    vis[i, j] = mi == mj or mj == lead
                elif within == "group":
                    vis[i, j] = mi == mj
                else:  # ordered: satellite block first, the map block sees it
                    vis[i, j] = mj <= mi
    return vis


@pytest.fixture(scope="module")
def params():
    mc = em.model_config("tiny", attention="einsum", patch_nums=PN, vocab_size=64)
    return _perturb(em.init_params(mc, jax.random.key(1)), 2)


ROWS = (None, SAT, MAP)  # a joint row, then translation rows led by each modality


def _dependency(params, within):
    """Per row kind of ROWS, (L, L) bool: nonzero d(projected logits at i) / d(input at joint
    position j); columns of the start positions (no teacher-forcing input) are False."""
    mc = em.model_config("tiny", attention="einsum", patch_nums=PN, vocab_size=64, within_scale=within)
    module = em.build(mc)
    B = len(ROWS)
    rng = np.random.default_rng(0)
    tf_sat, tf_map = (jnp.asarray(rng.normal(size=(B, LH - 1, mc.cvae)), jnp.float32) for _ in range(2))
    ids = jnp.asarray(rng.integers(0, 64, (B, LH)), jnp.int32)
    proj = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
    coords = jnp.tile(jnp.array([[12.0, 34.0]]), (B, 1))
    direction = jnp.array([-1 if d is None else d for d in ROWS])

    def out(a, b):
        logits, _ = module.apply({"params": params}, coords, a, b, direction=direction, ids_sat=ids, ids_map=ids)
        return logits @ proj  # (B, L): one generic direction of every position's logits

    j_sat, j_map = jax.jit(jax.jacrev(out, argnums=(0, 1)))(tf_sat, tf_map)  # (B, L, B, LH-1, Cvae)
    pos = joint_positions()
    deps = []
    for r in range(B):
        dep_half = [np.abs(np.asarray(j)[r, :, r]).sum(-1) > 0 for j in (j_sat, j_map)]  # (L, LH-1)
        dep = np.zeros((len(pos), len(pos)), bool)
        for j, (_, m, h) in enumerate(pos):
            if h > 0:  # half position h holds teacher-forcing input h-1
                dep[:, j] = dep_half[m][:, h - 1]
        deps.append(dep)
    return deps


@pytest.mark.parametrize("within", ["group", "all", "ordered"])
def test_logits_depend_exactly_on_what_eq10_allows(params, within):
    has_input = np.array([h > 0 for _, _, h in joint_positions()])
    for lead, dep in zip(ROWS, _dependency(params, within)):
        want = expected_visibility(within, None if within == "all" else lead)
        leaks = dep & ~want
        assert not leaks.any(), f"row led by {lead}: information flows where it may not: (out, in) {np.argwhere(leaks)[:5].tolist()}"
        missing = want[:, has_input] & ~dep[:, has_input]
        assert not missing.any(), f"row led by {lead}: allowed paths carry nothing: {np.argwhere(missing)[:5].tolist()}"


# ----------------------------------------------------------------------------- the loss


@pytest.fixture(scope="module")
def tok():
    return tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))


def _probed_loss(params, tok, *, directed_rate, modality_drop_rate, B=8, seed=0):
    """Run the real loss_fn with zero probes added to the model's logits and SI predictions;
    returns (grad wrt logits (B, L, V), grad wrt SI (B, L, D), the module's inputs, logits)."""
    mc = em.model_config("tiny", attention="einsum", patch_nums=PN, vocab_size=64,
                         directed_rate=directed_rate, modality_drop_rate=modality_drop_rate,
                         coord_drop_rate=0.0, drop_path_rate=0.0,
                         # the SI form the weights below are written for (the paper's "sqnorm"
                         # on reconstruction targets is tests/test_si.py's)
                         si_loss="mse", si_target="image")
    config = {"model": mc}
    frozen = emt.Frozen.of(tok.params, tok.config)
    r = np.random.default_rng(seed)
    g = 2
    batch = {"sat_tokens": jnp.asarray(r.integers(0, 64, (B, LH)), jnp.int32),
             "map_tokens": jnp.asarray(r.integers(0, 64, (B, LH)), jnp.int32),
             "coords": jnp.asarray(r.uniform(-60, 60, (B, 2)), jnp.float32),
             "sat_sem": jnp.asarray(r.normal(size=(B, g, g, mc.si_dim)), jnp.float32),
             "map_sem": jnp.asarray(r.normal(size=(B, g, g, mc.si_dim)), jnp.float32)}
    seen = {}

    def loss(probe_l, probe_s):
        def interceptor(next_fun, args, kwargs, context):
            if isinstance(context.module, em.EarthMapper) and context.method_name == "__call__":
                logits, si = next_fun(*args, **kwargs)
                seen.update(kwargs, logits=logits, si=si)
                return logits + probe_l, si + probe_s
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            value, _ = emt.loss_fn(params, batch, jax.random.key(seed), config, frozen)
        return value

    L = 2 * LH
    zl, zs = jnp.zeros((B, L, 64)), jnp.zeros((B, L, mc.si_dim))
    gl, gs = jax.grad(loss, argnums=(0, 1))(zl, zs)
    seen = {k: (np.asarray(v) if v is not None and not isinstance(v, bool) else v)
            for k, v in seen.items() if k in ("direction", "null_sat", "null_map", "logits", "si")}
    return np.asarray(gl), np.asarray(gs), seen, batch


def _expected_keep(seen, B):
    """(B, L) bool from the row kinds the model was given: a dropped (nulled) half and the
    condition half of a directed row carry no loss."""
    pos = joint_positions()
    modality = np.array([m for _, m, _ in pos])
    skip = np.zeros((B, 2), bool)
    for m, name in ((SAT, "null_sat"), (MAP, "null_map")):
        if seen.get(name) is not None:
            skip[:, m] |= seen[name]
        if seen.get("direction") is not None:
            skip[:, m] |= seen["direction"] == m
    return ~skip[:, modality]


def test_a_translation_row_drops_only_its_condition_half(params, tok):
    """Modality dropout in a directed row nulls the condition half (translation guidance's
    unconditional branch), never the target: every row keeps a loss."""
    gl, _, seen, _ = _probed_loss(params, tok, directed_rate=1.0, modality_drop_rate=0.9, B=16)
    direction, null_sat, null_map = seen["direction"], seen["null_sat"], seen["null_map"]
    assert (null_sat | null_map).sum() >= 8
    np.testing.assert_array_equal(null_sat, (null_sat | null_map) & (direction == SAT))
    np.testing.assert_array_equal(null_map, (null_sat | null_map) & (direction == MAP))
    assert (np.abs(gl).sum((1, 2)) > 0).all(), "a row without any loss term"


@pytest.mark.parametrize("directed_rate,drop", [(0.0, 0.0), (1.0, 0.0), (0.0, 0.9), (0.5, 0.5)])
def test_loss_counts_exactly_the_target_tokens(params, tok, directed_rate, drop):
    gl, gs, seen, batch = _probed_loss(params, tok, directed_rate=directed_rate, modality_drop_rate=drop)
    B = gl.shape[0]
    if directed_rate == 1.0:
        assert set(seen["direction"].tolist()) <= {SAT, MAP} and len(set(seen["direction"].tolist())) == 2
    if directed_rate == 0.0:
        assert seen.get("direction") is None  # the paper's pure joint rows
    if drop == 0.9:
        assert (seen["null_sat"] | seen["null_map"]).sum() >= B // 2 and not (seen["null_sat"] & seen["null_map"]).any()
    keep = _expected_keep(seen, B)
    if (directed_rate, drop) == (0.0, 0.0):
        assert keep.all()
    else:
        assert 0 < keep.sum() < keep.size
    np.testing.assert_array_equal(np.abs(gl).sum(-1) > 0, keep, err_msg="CE terms")
    np.testing.assert_array_equal(np.abs(gs).sum(-1) > 0, keep, err_msg="SI terms")

    # every kept CE term weighs the same: d mean / d logits = (softmax - onehot) / #kept
    pos = joint_positions()
    targets = np.stack([np.where(np.array([m for _, m, _ in pos]) == SAT,
                                 np.asarray(batch["sat_tokens"])[b][[h for _, _, h in pos]],
                                 np.asarray(batch["map_tokens"])[b][[h for _, _, h in pos]])
                        for b in range(B)])
    p = np.asarray(jax.nn.softmax(seen["logits"], -1))
    want = (p - np.eye(64)[targets]) * keep[..., None] / keep.sum()
    np.testing.assert_allclose(gl, want, rtol=0, atol=1e-6)

    # SI (mse): the mean over the kept tokens of each scale, then over scales (Eq. 13's 1/K Σ_k)
    scale = np.array([s for s, _, _ in pos])
    t = [np.asarray(semantic.targets_from_grid(batch[f"{m}_sem"], PN)) for m in ("sat", "map")]
    target = np.stack([np.where((np.array([m for _, m, _ in pos]) == SAT)[:, None],
                                t[0][b][[h for _, _, h in pos]], t[1][b][[h for _, _, h in pos]])
                       for b in range(B)])
    count = np.array([keep[:, scale == k].sum() for k in range(len(PN))])[scale]  # (L,)
    D = target.shape[-1]
    want_si = (semantic.DEFAULT_WEIGHT * 2.0 / D / len(PN)) * (seen["si"] - target) * (keep / count[None])[..., None]
    np.testing.assert_allclose(gs, want_si, rtol=1e-4, atol=1e-7)
