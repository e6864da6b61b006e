"""Semantic Infusion end to end: the paper's targets (DINOv2 of the scale-k reconstructions),
Eq. 13's normalisation and scale alignment through the real loss, the gradient reaching the
tapped block and not the blocks above it, and the start-up checks (SI sources, var_init)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.errors import InputError
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models import semantic
from earthmapper_jax.models.dinov2 import VARIANTS, DinoV2
from earthmapper_jax.models.layout import from_joint
from earthmapper_jax.scales import flatten_tokens
from earthmapper_jax.tokenizer.model import build as build_tokenizer
from earthmapper_jax.tokenizer.resize import area_resize
from earthmapper_jax.train import earthmapper_task as emt
from earthmapper_jax.train import preflight

TOK_CFG = dict(ch=32, vocab_size=64, z_channels=8, image_size=48, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 3, 4, 6))
PN = TOK_CFG["patch_nums"]


@pytest.fixture(scope="module")
def parts():
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    # depth 3, SI tapped after block 2 (1-based): block 3 lies above the tap
    mc = em.model_config("tiny", attention="einsum", patch_nums=PN, vocab_size=64, depth=3, si_layer=2,
                         coord_drop_rate=0.0, modality_drop_rate=0.0, drop_path_rate=0.0)
    params = em.init_params(mc, jax.random.key(1))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    images = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    batch = {"sat_tokens": np.asarray(flatten_tokens(tok.encode(images))),
             "map_tokens": np.asarray(flatten_tokens(tok.encode(images[::-1]))),
             "coords": np.array([[30.0, 120.0], [31.0, 121.0]], np.float32)}
    return tok, mc, params, batch


def test_reconstruction_targets_are_dinov2_of_cumulative_decodes(parts):
    tok = parts[0]
    dino = DinoV2(**VARIANTS["test_tiny"])
    dp = dino.init(jax.random.key(3), jnp.zeros((1, 56, 56, 3)))["params"]
    images = np.random.default_rng(1).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    idx = tok.encode(images)
    got = semantic.reconstruction_targets(build_tokenizer(TOK_CFG), tok.params, idx, dino, dp, PN, 56)
    assert got.shape == (2, sum(p * p for p in PN), 32)
    begin = 0
    for k, pn in enumerate(PN):
        grid = semantic.dinov2_grid(dino, dp, tok.decode(idx[: k + 1]), 56)
        want = area_resize(grid, pn).reshape(2, pn * pn, 32)
        np.testing.assert_allclose(np.asarray(got[:, begin:begin + pn * pn]), np.asarray(want), atol=2e-4)
        begin += pn * pn
    # scale k's target differs from the real image's target (the paper's, not "image")
    img_t = semantic.targets_from_grid(semantic.dinov2_grid(dino, dp, images, 56), PN)
    assert float(jnp.abs(img_t[:, :1] - got[:, :1]).max()) > 1e-3


def _si_loss(params, batch, mc, frozen):
    return emt.loss_fn(params, batch, jax.random.key(0), {"model": mc}, frozen)[1]["si_loss"]


def test_si_loss_is_eq13_and_aligned_per_scale(parts):
    """Targets equal to the model's own predictions give 0; shifting the satellite targets of
    one scale k by 1 in every feature gives exactly D/(2K): the per-position squared norm (D),
    averaged over the 2·pn_k² positions of scale k (half of them shifted), 1/K over scales."""
    tok, mc, params, batch = parts
    frozen = emt.Frozen.of(tok.params, tok.config)
    module = em.build(mc)
    (_, tf_sat, _), (_, tf_map, _) = emt._tokens_and_inputs(mc, batch, frozen)
    _, pred = module.apply({"params": params}, jnp.asarray(batch["coords"]), tf_sat, tf_map)
    p_sat, p_map = from_joint(pred, PN)
    D, K = pred.shape[-1], len(PN)
    exact = dict(batch, sat_sem=np.asarray(p_sat), map_sem=np.asarray(p_map))
    assert float(_si_loss(params, exact, mc, frozen)) < 1e-8
    begins = np.cumsum([0] + [p * p for p in PN])
    for k in (0, 2, K - 1):
        shifted = np.asarray(p_sat).copy()
        shifted[:, begins[k]:begins[k + 1]] += 1.0
        got = float(_si_loss(params, dict(exact, sat_sem=shifted), mc, frozen))
        np.testing.assert_allclose(got, D / (2 * K), rtol=1e-4, err_msg=f"scale {k}")
    # σ weighs it into the total as Eq. 14
    loss, m = emt.loss_fn(params, dict(exact, sat_sem=shifted), jax.random.key(0), {"model": mc}, frozen)
    np.testing.assert_allclose(float(loss), float(m["ce"]) + 0.5 * float(m["si_loss"]), rtol=1e-5)


def test_si_gradient_reaches_the_tapped_block_not_above(parts):
    tok, mc, params, batch = parts
    frozen = emt.Frozen.of(tok.params, tok.config)
    rng = np.random.default_rng(4)
    L = sum(p * p for p in PN)
    sem = dict(sat_sem=rng.normal(size=(2, L, mc.si_dim)).astype(np.float32),
               map_sem=rng.normal(size=(2, L, mc.si_dim)).astype(np.float32))
    g = jax.grad(_si_loss)(params, dict(batch, **sem), mc, frozen)
    norm = lambda t: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))  # noqa: E731
    assert norm(g["si_head"]) > 0
    assert norm(g["blocks"]["layer_0"]) > 0 and norm(g["blocks"]["layer_1"]) > 0  # tapped: block 2
    assert norm(g["blocks"]["layer_2"]) == 0.0  # above the tap
    assert norm(g["head"]) == 0.0 and norm(g["head_nm"]) == 0.0
    assert norm(g["word_embed"]) > 0  # reaches the inputs


def _config(**model):
    c = ml_collections.ConfigDict({"model": em.model_config("tiny", **model),
                                   "data": {"tokens_dir": None, "split": "train"}})
    return c


def test_startup_checks_name_the_flag():
    with pytest.raises(InputError, match="config.model.si_dinov2") as e:
        preflight.check_si_sources(_config(si_weight=0.5))
    assert "\n" not in str(e.value)
    preflight.check_si_sources(_config(si_weight=0.0))  # SI off: nothing needed
    preflight.check_si_sources(_config(si_weight=0.5, si_dinov2="/some/dinov2.pth"))  # on the fly
    with pytest.raises(InputError, match="var_init=none") as e:
        emt.pretrained(_config(var_init="required"))
    assert "\n" not in str(e.value)
    assert emt.pretrained(_config(var_init="none")) is None
