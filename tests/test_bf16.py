"""Mixed precision: config.model.dtype="bfloat16" runs the transformer's matmuls in bf16.

Read from the lowered training loss (StableHLO): every matmul against a block weight (qkv,
attention projection, FFN fc1/fc2, AdaLN) takes bf16 operands, and no matmul does in the fp32
program; the loss of the same params and batch moves by a small,
non-zero amount (the parameters stay fp32: only the compute dtype changes).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.train import earthmapper_task as emt

PN = (1, 2, 3)
V = 64
TOK_CFG = dict(ch=32, vocab_size=V, z_channels=8, image_size=24, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=PN)
SIG = re.compile(r"stablehlo\.dot_general.*:\s*\(tensor<((?:\d+x)*)(\w+)>,\s*tensor<((?:\d+x)*)(\w+)>\)")


def _dots(text):
    """[(lhs shape, lhs dtype, rhs shape, rhs dtype)] of every dot_general in a StableHLO module."""
    out = []
    for line in text.splitlines():
        m = SIG.search(line)
        if m:
            out.append((m.group(1).rstrip("x"), m.group(2), m.group(3).rstrip("x"), m.group(4)))
    return out


@pytest.fixture(scope="module")
def setup():
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    frozen = emt.Frozen.of(tok.params, tok.config)
    mc = em.model_config("tiny", patch_nums=PN, vocab_size=V, attention="einsum", si_layer=0,
                         coord_drop_rate=0.0, modality_drop_rate=0.0, drop_path_rate=0.0)
    params = em.init_params(mc, jax.random.key(1))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params)
    r = np.random.default_rng(0)
    LH = sum(p * p for p in PN)
    batch = {"sat_tokens": jnp.asarray(r.integers(0, V, (4, LH)), jnp.int32),
             "map_tokens": jnp.asarray(r.integers(0, V, (4, LH)), jnp.int32),
             "coords": jnp.asarray(r.uniform(-60, 60, (4, 2)), jnp.float32)}
    return mc, params, batch, frozen


def _config(mc, dtype):
    c = ml_collections.ConfigDict(mc.to_dict())
    c.dtype = dtype
    return {"model": c}


def test_transformer_matmuls_run_in_bf16(setup):
    mc, params, batch, frozen = setup
    C, hidden = mc.embed_dim, round(mc.embed_dim * mc.mlp_ratio)
    token_weights = {f"{C}x{3 * C}", f"{C}x{C}", f"{C}x{hidden}", f"{hidden}x{C}"}  # qkv, proj, fc1, fc2
    for dtype in ("bfloat16", "float32"):
        config = _config(mc, dtype)
        text = jax.jit(lambda p, b: emt.loss_fn(p, b, jax.random.key(0), config, frozen)[0]).lower(
            params, batch).as_text()
        dots = _dots(text)
        assert dots, "no matmul found in the lowered program"
        # token matmuls (B, L, C) x block weight, and the per-block AdaLN (B, C) x (C, 6C); the
        # geo MLP and the SI head are fp32 by design and are neither
        block = [d for d in dots if (d[2] in token_weights and d[0].count("x") >= 2) or d[2] == f"{C}x{6 * C}"]
        assert len(block) >= 5 * mc.depth, (dtype, block)
        want = "bf16" if dtype == "bfloat16" else "f32"
        assert all(d[1] == want and d[3] == want for d in block), (dtype, block)
        if dtype == "float32":  # nothing is silently computed in bf16 in the fp32 program
            assert not any(d[1] == "bf16" or d[3] == "bf16" for d in dots), dots
    # (the attention einsums take q, k as given but form softmax and P·V in fp32 by design,
    # models/attention.py, so they are not part of the bf16 claim)


def test_bf16_loss_differs_from_fp32_by_a_small_nonzero_amount(setup):
    mc, params, batch, frozen = setup
    out = {}
    for dtype in ("bfloat16", "float32"):
        config = _config(mc, dtype)
        out[dtype] = float(jax.jit(lambda p, b: emt.loss_fn(p, b, jax.random.key(0), config, frozen)[0])(
            params, batch))
    diff = abs(out["bfloat16"] - out["float32"])
    assert 0 < diff < 2e-2 * abs(out["float32"]), out
