"""VAR-mode transformer: internal consistency (random weights, tiny shapes).

- the KV-cached sampler's per-scale logits equal the teacher-forced forward on the same tokens,
  with and without CFG;
- the block-causal mask never lets a token see a finer scale (perturbation);
- scan-over-layers (with and without remat) equals the unrolled stack; layouts convert;
- mask builders, the VAR filter on candidates vs the full vocabulary;
- the parameter tree of VAR d16/d36 is the layout the converters and saved checkpoints use.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax import scales
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.errors import InputError
from earthmapper_jax.models import masks
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.blocks import stack_block_params, unstack_block_params
from earthmapper_jax.models.loading import Model
from earthmapper_jax.models.var_mode import tokenizer_parts
from earthmapper_jax.sampling import generate_class
from earthmapper_jax.sampling.filtering import candidates, filter_top_k_top_p, scatter_candidates
from earthmapper_jax.sampling.var_sampler import sample_var_tokens

# A small VQ-VAE (one downsampling, 8 px) and three scales keep compile times low (the
# parity tests run the full tiny 6-scale layout).
PATCH_NUMS = (1, 2, 4)
TOK_CFG = dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, vocab_size=512, z_channels=8,
               image_size=8, patch_nums=PATCH_NUMS)


@pytest.fixture(scope="module")
def model():
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    cfg = var_lib.var_config("tiny", attention="einsum", sample_attention="einsum",
                             patch_nums=PATCH_NUMS)
    params = var_lib.init_params(cfg, jax.random.key(1))
    # VAR's init leaves the blocks near identity (gamma ~1e-5): perturb so every path matters
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return Model(cfg, jax.tree_util.tree_unflatten(tree, leaves), tok)


def _sample(model, labels, cfg, top_k=1):
    tok_module, tok_params = tokenizer_parts(model.tokenizer)
    fn = jax.jit(lambda p, tp, lab, rng: sample_var_tokens(
        model.module, tok_module, p, tp, lab, rng, cfg, 0.0, 1.0, top_k=top_k,
        more_smooth=False, guided=cfg != 0, decode=False, return_logits=True))
    return fn(model.params, tok_params, labels, jax.random.key(3))


@pytest.mark.parametrize("cfg", [3.0])  # cfg 0 runs in the parity tests
def test_cached_sampler_equals_teacher_forcing(model, cfg):
    labels = jnp.array([1, 4, 10], jnp.int32)
    maps, _, logits = _sample(model, labels, cfg, top_k=5)
    tf = model.logits(labels, maps)
    K = len(model.config.patch_nums)
    if cfg:
        tf_u = model.logits(jnp.full_like(labels, model.config.num_classes), maps)
    for si, (b, e) in enumerate(scales.scale_offsets(model.config.patch_nums)):
        want = tf[:, b:e]
        if cfg:
            t = cfg * si / (K - 1)
            want = (1 + t) * want - t * tf_u[:, b:e]
        np.testing.assert_allclose(np.asarray(logits[si]), np.asarray(want), rtol=0, atol=2e-5,
                                   err_msg=f"scale {si}")


def test_generate_class_greedy_is_deterministic_and_decodes(model):
    labels = np.array([2, 10])
    m1, img1 = generate_class(model, labels, jax.random.key(0), cfg=2.0, top_k=1, top_p=0.0)
    m2, img2 = generate_class(model, labels, jax.random.key(9), cfg=2.0, top_k=1, top_p=0.0)
    for a, b, pn in zip(m1, m2, model.config.patch_nums):
        assert a.shape == (2, pn, pn) and a.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert img1.shape == (2, 8, 8, 3)
    assert float(jnp.abs(img1).max()) <= 1.0
    # the more_smooth path and top-p run (values are random; only shapes/ranges checked)
    m3, img3 = generate_class(model, labels, jax.random.key(0), cfg=1.5, top_k=50, top_p=0.9,
                              more_smooth=True)
    assert img3.shape == img1.shape and all(int(m.max()) < 512 for m in m3)


def test_bad_labels_and_settings(model):
    with pytest.raises(InputError, match="class labels"):
        generate_class(model, np.array([11]), jax.random.key(0))
    with pytest.raises(InputError, match="top_p"):
        generate_class(model, np.array([1]), jax.random.key(0), top_p=1.5)
    with pytest.raises(InputError, match="token maps"):
        model.logits(np.array([1]), [np.zeros((1, 1, 1), np.int32)])


def test_mask_blocks_finer_scales(model):
    """Changing the inputs of scale k changes no logit of a coarser scale (exactly)."""
    c = model.config
    L = sum(p * p for p in c.patch_nums)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, L - 1, c.cvae)), jnp.float32)
    labels = jnp.array([3, 5])
    base = np.asarray(var_lib.forward(model.module, model.params, labels, x))
    offsets = scales.scale_offsets(c.patch_nums)
    for k in range(1, len(c.patch_nums)):
        b, e = offsets[k]
        x2 = x.at[:, b - 1 : e - 1].add(1.0)  # x has no first-scale position: shift by first_l
        out = np.asarray(var_lib.forward(model.module, model.params, labels, x2))
        assert np.array_equal(out[:, :b], base[:, :b]), f"scale {k} leaked into coarser scales"
        assert np.abs(out[:, b:e] - base[:, b:e]).max() > 1e-4  # and it is seen at its own scale


def test_scan_and_remat_equal_unrolled(model):
    c = model.config
    L = sum(p * p for p in c.patch_nums)
    x = jax.random.normal(jax.random.key(5), (2, L - 1, c.cvae))
    labels = jnp.array([0, 10])
    ref = var_lib.forward(model.module, model.params, labels, x)
    stacked = stack_block_params(model.params, c.depth)
    assert stacked["blocks"]["layers"]["block"]["attn"]["mat_qkv"]["kernel"].shape[0] == c.depth
    for remat in ("none", "full"):
        m = var_lib.build(c, scan_layers=True, remat=remat)
        out = var_lib.forward(m, stacked, labels, x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=1e-5)
    back = unstack_block_params(stacked, c.depth)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back,
                           jax.tree_util.tree_map(np.asarray, model.params))
    # the scanned model samples identically too
    scanned = model.with_config(scan_layers=True)
    labels = np.array([2, 10])  # the settings of the greedy test: its compilation is reused
    a, _ = generate_class(model, labels, jax.random.key(0), cfg=2.0, top_k=1, top_p=0.0)
    b, _ = generate_class(scanned, labels, jax.random.key(0), cfg=2.0, top_k=1, top_p=0.0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_training_mode_runs_with_drop_path_and_label_dropout(model):
    c = model.config
    L = sum(p * p for p in c.patch_nums)
    m = var_lib.build(c, drop_path_rate=0.5, cond_drop_rate=0.5, scan_layers=True, remat="dots")
    stacked = stack_block_params(model.params, c.depth)
    x = jnp.ones((4, L - 1, c.cvae))

    def loss(p):
        lg = m.apply({"params": p}, jnp.arange(4), x, False, rngs={"dropout": jax.random.key(0)})
        return jnp.mean(lg ** 2)

    g = jax.grad(loss)(stacked)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(g))


def test_mask_builders():
    ids = scales.scale_ids((1, 2))
    assert ids.tolist() == [0, 1, 1, 1, 1]
    m = masks.var_mask((1, 2))
    assert m[0].tolist() == [True, False, False, False, False] and m[1:].all()
    # joint layout: per scale a satellite (group 0) and a map (group 1) block
    scale = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    group = np.array([0, 1, 0, 0, 0, 0, 1, 1, 1, 1])
    sep = masks.block_causal_mask(scale, q_group=group, within_scale="group")
    assert not sep[0, 1] and not sep[1, 0] and sep[2, :2].all() and not sep[2, 6:].any()
    assert sep[6, 6:].all() and not sep[6, 2:6].any()
    ordered = masks.block_causal_mask(scale, q_group=group, within_scale="ordered")
    assert ordered[6, 2:6].all() and not ordered[2, 6:].any()
    assert not masks.block_causal_mask(scale, within_scale="all")[0, 2]


def test_candidate_filter_equals_full_vocab_filter():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(np.round(rng.normal(size=(4, 7, 300)) * 20) / 4, jnp.float32)  # ties
    for k, p in ((0, 0.7), (1, 0.0), (10, 0.0), (50, 0.9), (299, 0.96)):
        full = filter_top_k_top_p(logits, k, p)
        v, i = candidates(logits, k, p)
        np.testing.assert_array_equal(np.isinf(np.asarray(scatter_candidates(v, i, 300))),
                                      np.isinf(np.asarray(full)), err_msg=f"k={k} p={p}")


def test_block_causal_description_equals_mask(model):
    """masks.BlockCausal (ids, mask built in-graph) == the precomputed boolean mask."""
    c = model.config
    L = sum(p * p for p in c.patch_nums)
    mod, variables = model.module, {"params": model.params}
    cond = mod.apply(variables, jnp.array([1, 2]), method=var_lib.VAR.class_embedding)
    seq = jax.random.normal(jax.random.key(6), (2, L, c.embed_dim))
    run = jax.jit(lambda m: mod.apply(variables, seq, cond, m, method=var_lib.VAR.transformer)[0])
    a = run(masks.as_attention_mask(masks.var_mask(c.patch_nums)))
    b = run(masks.BlockCausal(jnp.asarray(scales.scale_ids(c.patch_nums))))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_bias_attention_equals_mask_attention_with_gradients(model):
    """attention="xla_bias" (the mask as an additive bias, issue 18) gives the masked XLA
    attention's loss and gradients: a masked logit's exp is 0 either way."""
    c = model.config
    L = sum(p * p for p in c.patch_nums)
    labels = jnp.array([1, 2])
    x = jax.random.normal(jax.random.key(7), (2, L - 1, c.cvae))
    out = {}
    for impl in ("xla", "xla_bias"):
        mod = var_lib.build(c, attention=impl)
        loss = lambda p, mod=mod: (mod.apply({"params": p}, labels, x) ** 2).mean()  # noqa: E731
        out[impl] = jax.jit(jax.value_and_grad(loss))(model.params)
    for a, b in zip(jax.tree.leaves(out["xla"]), jax.tree.leaves(out["xla_bias"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _layout(params) -> dict:
    """{"a/b/c": shape} of a (possibly logically boxed, abstract) parameter tree."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]
    return {"/".join(k.key for k in path): tuple(x.shape) for path, x in flat}


def _block_layout(i, C, heads, shared):
    out = {
        "attn/mat_qkv/kernel": (C, 3 * C), "attn/proj/kernel": (C, C), "attn/proj/bias": (C,),
        "attn/q_bias": (C,), "attn/v_bias": (C,), "attn/scale_mul": (heads,),
        "ffn/fc1/kernel": (C, 4 * C), "ffn/fc1/bias": (4 * C,),
        "ffn/fc2/kernel": (4 * C, C), "ffn/fc2/bias": (C,),
    }
    out.update({"ada_gss": (6, C)} if shared else {"ada_lin/kernel": (C, 6 * C), "ada_lin/bias": (6 * C,)})
    return {f"blocks/layer_{i}/{k}": v for k, v in out.items()}


@pytest.mark.parametrize("name, depth, L, K, shared", [("d16", 16, 680, 10, False),
                                                       ("d36", 36, 2240, 10, True)])
def test_param_tree_is_the_released_layout(name, depth, L, K, shared):
    """VAR's parameter names, nesting and shapes, as the converters, the parity fixtures and
    saved model directories have them (written out here, not derived from the code)."""
    C, V = 64 * depth, 4096
    want = {
        "word_embed/kernel": (32, C), "word_embed/bias": (C,), "class_emb/embedding": (1001, C),
        "pos_start": (1, C), "pos_1LC": (L, C), "lvl_embed/embedding": (K, C),
        "head_nm/ada_lin/kernel": (C, 2 * C), "head_nm/ada_lin/bias": (2 * C,),
        "head/kernel": (C, V), "head/bias": (V,),
    }
    if shared:
        want.update({"shared_ada_lin/kernel": (C, 6 * C), "shared_ada_lin/bias": (6 * C,)})
    for i in range(depth):
        want.update(_block_layout(i, C, depth, shared))
    module = var_lib.build(var_lib.var_config(name))
    abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1,), jnp.int32),
                              jnp.zeros((1, L - 1, 32), jnp.float32))["params"]
    assert _layout(abstract) == want
    assert jax.tree.structure(nn.meta.unbox(abstract)) == jax.tree.structure(_nest(want))


def _nest(flat: dict) -> dict:
    out = {}
    for path, shape in flat.items():
        *parents, leaf = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
    return out
