"""Tokenizer pieces that need no VAR fixture: Phi table, resize matrices, configs, dtypes."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.errors import InputError
from earthmapper_jax.tokenizer import Tokenizer, init_params, param_shapes
from earthmapper_jax.tokenizer.config import model_config
from earthmapper_jax.tokenizer.quantizer import phi_index_table
from earthmapper_jax.tokenizer.resize import area_matrix, bicubic_matrix

MICRO = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
             image_size=16, patch_nums=(1, 2, 4, 8))


def test_phi_table_matches_var_release():
    assert phi_index_table(10, 4) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert phi_index_table(14, 4) == (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3)
    assert phi_index_table(6, 4) == (0, 0, 1, 2, 3, 3)
    assert phi_index_table(10, 1) == (0,) * 10
    assert phi_index_table(10, 0) == tuple(range(10))  # one Phi per scale
    assert phi_index_table(6, 3) == (0, 0, 1, 1, 2, 2)


def test_resize_matrices_basic_properties():
    for a, b in [(16, 13), (8, 3), (5, 5)]:
        np.testing.assert_allclose(area_matrix(a, b).sum(1), 1, rtol=1e-6)
    for a, b in [(1, 16), (3, 16), (13, 16)]:
        np.testing.assert_allclose(bicubic_matrix(a, b).sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(bicubic_matrix(4, 4), np.eye(4, dtype=np.float32))
    # area 16 -> 3 uses overlapping windows [0, 6), [5, 11), [10, 16).
    assert (area_matrix(16, 3) > 0).sum(1).tolist() == [6, 6, 6]


def test_config_validation_messages():
    with pytest.raises(InputError, match="last patch_num 10 must equal the latent size 16"):
        model_config(patch_nums=(1, 2, 10))
    with pytest.raises(InputError, match="multiple of 32"):
        model_config(ch=48)
    with pytest.raises(InputError, match="unknown tokenizer config keys"):
        model_config({"chh": 1})


def _load_config_module():
    path = pathlib.Path(__file__).parents[1] / "configs" / "tokenizer_var.py"
    spec = importlib.util.spec_from_file_location("tokenizer_var", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_file_variants():
    mod = _load_config_module()
    c256, c512, tiny = (mod.get_config(a) for a in ("256", "512", "tiny"))
    assert c256.model.ch == 160 and c256.model.patch_nums[-1] == 16 and c256.task == "tokenizer"
    assert c512.model.image_size == 512 and c512.model.patch_nums[-1] == 32
    assert tiny.model.image_size == 64 and tiny.model.patch_nums[-1] == 8
    shapes = param_shapes(c256.model)
    n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert n == 108_948_355  # VAR's released vae_ch160v4096z32 parameter count
    with pytest.raises(ValueError):
        mod.get_config("1024")


def test_bf16_compute_keeps_fp32_params_and_close_outputs():
    p = init_params(MICRO, jax.random.key(0))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    f32 = Tokenizer(p, MICRO).encode_features(x)
    bf16 = Tokenizer(p, dict(MICRO, dtype="bfloat16")).encode_features(x)
    assert bf16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
    assert rel < 0.05, rel


def test_nearest_codes_l2_and_cosine():
    from earthmapper_jax.tokenizer.quantizer import nearest_codes

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 8)).astype(np.float32)
    cb = rng.normal(size=(40, 8)).astype(np.float32) * rng.uniform(0.2, 3, (40, 1)).astype(np.float32)
    l2 = ((z[:, None] - cb[None]) ** 2).sum(-1).argmin(1)
    cos = ((z / np.linalg.norm(z, axis=1, keepdims=True))
           @ (cb / np.linalg.norm(cb, axis=1, keepdims=True)).T).argmax(1)
    np.testing.assert_array_equal(nearest_codes(z, cb), l2)
    np.testing.assert_array_equal(nearest_codes(z, cb, using_znorm=True), cos)
    assert (l2 != cos).any()  # the two rules differ on codes of different norms
