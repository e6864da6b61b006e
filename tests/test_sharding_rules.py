"""Sharding declared where parameters are created: logical names on every parameter, one rules
table, nothing large left replicated under FSDP, and names that change nothing else.

Everything here is abstract (`jax.eval_shape`) except the small equivalence check at the end.
The conftest gives 8 simulated CPU devices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import tokenizer_var
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.errors import EarthMapperError
from earthmapper_jax.io.pth import load_state_dict
from earthmapper_jax.models import earthmapper as em_lib
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.blocks import AdaLNSelfAttn
from earthmapper_jax.tokenizer import losses
from earthmapper_jax.tokenizer.convert import convert_state_dict
from earthmapper_jax.tokenizer.model import VQVAE
from earthmapper_jax.train import sharding
from earthmapper_jax.train.optim import path_name


def _is_box(x):
    return isinstance(x, nn.meta.AxisMetadata)


def _var_boxed(name, **overrides):
    module = var_lib.build(var_lib.var_config(name, **overrides))
    labels = jnp.zeros((1,), jnp.int32)
    x = jnp.zeros((1, module.seq_len - module.first_l, module.cvae), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), labels, x)["params"]


def _tokenizer_boxed(arg, gan=False):
    config = tokenizer_var.get_config(arg)
    if gan:
        config.loss.gan_weight = 0.1
    return jax.eval_shape(lambda: losses.init_params(config, jax.random.key(0)))


def _flat(tree):
    return {path_name(p): (tuple(a.shape), a.dtype)
            for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


# VAR's block layout at width C = 1024 (d16), as its state dict has it (see models/convert_var.py).
D16_BLOCK = {
    "ada_lin/kernel": (1024, 6144), "ada_lin/bias": (6144,),
    "attn/mat_qkv/kernel": (1024, 3072), "attn/q_bias": (1024,), "attn/v_bias": (1024,),
    "attn/scale_mul": (16,), "attn/proj/kernel": (1024, 1024), "attn/proj/bias": (1024,),
    "ffn/fc1/kernel": (1024, 4096), "ffn/fc1/bias": (4096,),
    "ffn/fc2/kernel": (4096, 1024), "ffn/fc2/bias": (1024,),
}


@pytest.mark.parametrize("scan", [False, True])
def test_var_d16_blocks_unbox_to_vars_layout(scan):
    boxed = _var_boxed("d16", scan_layers=scan)
    blocks = _flat(nn.meta.unbox(boxed)["blocks"])
    if scan:
        want = {f"layers/block/{k}": ((16,) + s, jnp.float32) for k, s in D16_BLOCK.items()}
    else:
        want = {f"layer_{i}/{k}": (s, jnp.float32) for i in range(16) for k, s in D16_BLOCK.items()}
    assert blocks == want
    # Unboxing only strips the boxes: the same leaves in the same order.
    assert jax.tree.leaves(boxed) == jax.tree.leaves(nn.meta.unbox(boxed))


def test_tiny_tokenizer_unboxes_to_the_tree_the_fixture_loads_into(fixtures_dir):
    sd = load_state_dict(fixtures_dir / "var_vae" / "vae.pth")
    params, cfg = convert_state_dict(sd, image_size=128, patch_nums=(1, 2, 3, 4, 6, 8))
    loaded = _flat(jax.tree.map(jnp.asarray, params))
    s = cfg["image_size"]
    boxed = jax.eval_shape(lambda: VQVAE(cfg).init(jax.random.key(0), jnp.zeros((1, s, s, 3))))
    assert _flat(nn.meta.unbox(boxed)["params"]) == loaded
    assert _flat(tok_lib.param_shapes(cfg)) == loaded
    # The training task's init is the same tree, boxed.
    assert all(_is_box(b) for b in jax.tree.leaves(
        tok_lib.logically_partitioned(params, cfg), is_leaf=_is_box))


@pytest.mark.parametrize("name", ["d16", "d24"])
def test_scanned_layer_axis_is_never_sharded(name):
    boxed = _var_boxed(name, scan_layers=True)
    mesh = sharding.make_mesh({"fsdp": 8})  # 8 divides 16 and 24: sharding it would be possible
    stacked = jax.tree_util.tree_flatten_with_path(boxed["blocks"], is_leaf=_is_box)[0]
    assert len(stacked) == len(D16_BLOCK)
    for path, box in stacked:
        assert isinstance(box, nn.LogicallyPartitioned), path_name(path)
        assert box.names[0] is None, (path_name(path), box.names)
        assert len(box.names) == box.value.ndim, (path_name(path), box.names)
        assert sharding.spec_for(box, mesh)[0] is None, path_name(path)


def _assert_large_params_sharded(boxed):
    mesh = sharding.make_mesh({"fsdp": 8})
    shardings = sharding.param_shardings(boxed, mesh)  # raises on unnamed parameters
    flat_shapes = jax.tree.leaves(nn.meta.unbox(boxed))
    n_large = 0
    for (path, sh), leaf in zip(jax.tree_util.tree_flatten_with_path(shardings)[0], flat_shapes):
        if np.prod(leaf.shape) >= sharding.FSDP_MIN_SIZE:
            n_large += 1
            assert any(a is not None for a in sh.spec), (path_name(path), leaf.shape, sh.spec)
            assert sh.shard_shape(leaf.shape) != tuple(leaf.shape)
    assert n_large > 0


@pytest.mark.parametrize("name", ["d16", "d24"])
def test_every_large_var_param_is_sharded_under_fsdp(name):
    _assert_large_params_sharded(_var_boxed(name))


def test_every_large_earthmapper_param_is_sharded_under_fsdp():
    """The GJSA additions (geo MLP, condition embeddings, SI head, shared AdaLN) are named too."""
    config = em_lib.model_config("d16", si_layer=8, shared_aln=True)
    boxed = jax.eval_shape(lambda: em_lib.init_params(config, jax.random.key(0),
                                                      keep_axis_names=True))
    assert sharding.naming_problems(boxed) == []
    for key in ("si_head", "shared_ada_lin", "geo", "cond_token_embed"):
        assert key in boxed
    _assert_large_params_sharded(boxed)


@pytest.mark.parametrize("arg,gan", [("tiny", True), ("256", False)])
def test_every_large_tokenizer_param_is_sharded_under_fsdp(arg, gan):
    _assert_large_params_sharded(_tokenizer_boxed(arg, gan))


def test_every_block_param_is_named_at_creation():
    """Blocks and tokenizer carry a name for every dimension of every parameter."""
    for tree in (_var_boxed("d16")["blocks"], _var_boxed("d36")["blocks"],
                 _tokenizer_boxed("tiny", gan=True)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)[0]:
            assert isinstance(leaf, nn.LogicallyPartitioned), path_name(path)
            assert len(leaf.names) == leaf.value.ndim, path_name(path)
    assert sharding.naming_problems(_var_boxed("d36")) == []


class _Sloppy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(256, name="unnamed")(x)  # 128 x 256 kernel: large, no names
        x = nn.Dense(256, name="typo", kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embd", "mlp")))(x)
        return x + self.param("small", nn.initializers.zeros, (256,))  # small: may stay unnamed


def test_unnamed_or_misnamed_params_are_reported_not_replicated():
    boxed = jax.eval_shape(_Sloppy().init, jax.random.key(0), jnp.zeros((1, 128)))["params"]
    problems = sharding.naming_problems(boxed)
    assert len(problems) == 2
    assert problems[0].startswith("typo/kernel (256, 256): logical axis name(s) ['embd']")
    assert problems[1].startswith("unnamed/kernel (128, 256) has no logical axis names")
    with pytest.raises(EarthMapperError, match="2 parameter.*unnamed/kernel"):
        sharding.param_shardings(boxed, sharding.make_mesh({"fsdp": 8}))


def test_block_activations_are_constrained_only_under_rules_and_mesh():
    block = AdaLNSelfAttn(num_heads=2)
    x, cond = jnp.zeros((8, 4, 64)), jnp.zeros((8, 64))
    params = nn.meta.unbox(jax.eval_shape(block.init, jax.random.key(0), x, cond)["params"])

    def jaxpr():
        return str(jax.make_jaxpr(lambda p: block.apply({"params": p}, x, cond)[0])(params))

    assert "sharding_constraint" not in jaxpr()
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
        text = jaxpr()
    assert text.count("sharding_constraint") >= 2  # block input and output


def test_tiny_var_forward_is_the_same_sharded():
    """Params placed by their logical names and constrained activations on a mixed 8-device
    mesh give the single-device logits."""
    cfg = var_lib.var_config("tiny", patch_nums=(1, 2, 4), attention="einsum", scan_layers=True)
    module = var_lib.build(cfg)
    labels = jnp.arange(8, dtype=jnp.int32) % 10
    x = jax.random.normal(jax.random.key(1), (8, module.seq_len - 1, module.cvae))
    boxed = jax.eval_shape(module.init, jax.random.key(0), labels, x)["params"]
    params = var_lib.init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.05 * jnp.sign(a), params)  # blocks away from identity

    def fwd(p, lab, xx):
        return module.apply({"params": p}, lab, xx)

    want = jax.jit(fwd)(params, labels, x)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = sharding.param_shardings(boxed, mesh)
    assert shardings["blocks"]["layers"]["block"]["ffn"]["fc1"]["kernel"].spec == P(
        None, "fsdp", "tensor")
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
        got = jax.jit(fwd)(jax.device_put(params, shardings),
                           jax.device_put(labels, sharding.batch_sharding(mesh, 1)),
                           jax.device_put(x, sharding.batch_sharding(mesh, 3)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
