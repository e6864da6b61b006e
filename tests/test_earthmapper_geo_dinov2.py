"""Geo embedding, coordinate validation, DINOv2 port (against a PyTorch reference fixture)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.pth import load_state_dict, save_state_dict
from earthmapper_jax.models import dinov2, geo, semantic


def test_sin_embed_longitude_wraps_and_separates_neighbours():
    e = geo.sin_embed(jnp.array([-180.0, 180.0, 10.0, 10.002]), 16)
    np.testing.assert_allclose(e[0], e[1], atol=1e-5)
    assert float(jnp.abs(e[2] - e[3]).max()) > 0.05  # ~200 m apart still differ


def test_geo_embed_null_for_nan_and_drop():
    m = geo.GeoEmbed(width=32, num_freqs=8)
    coords = jnp.array([[45.0, 7.0], [np.nan, np.nan], [45.0, 7.0]])
    params = m.init(jax.random.PRNGKey(0), coords)["params"]
    out = m.apply({"params": params}, coords, drop=jnp.array([False, False, True]))
    np.testing.assert_array_equal(out[1], params["null"])
    np.testing.assert_array_equal(out[2], params["null"])
    assert not np.allclose(out[0], params["null"])
    # gradients stay finite with NaN rows (the MLP never sees the NaN)
    g = jax.grad(lambda p: m.apply({"params": p}, coords).sum())(params)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))


@pytest.mark.parametrize(
    "coords, msg",
    [
        ([[91.0, 0.0]], "out of range"),
        ([[0.0, -180.5]], "out of range"),
        ([[np.nan, 3.0]], "half NaN"),
        ([[np.inf, 3.0]], "infinite"),
        ([[1.0, 2.0, 3.0]], "expected (batch, 2)"),
    ],
)
def test_validate_coords_errors(coords, msg):
    with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        geo.validate_coords(coords)
    assert "\n" not in str(e.value)


def test_validate_coords_nan_policy_and_broadcast():
    assert geo.validate_coords(None, 3).shape == (3, 2)
    with pytest.raises(InputError, match="required"):
        geo.validate_coords([[np.nan, np.nan]], allow_nan=False)
    np.testing.assert_array_equal(geo.validate_coords((1.0, 2.0), 2), [[1, 2], [1, 2]])


@pytest.mark.parametrize("name", ["mlp", "swiglu_reg"])
def test_dinov2_matches_torch_reference(fixtures_dir, name):
    sd = load_state_dict(fixtures_dir / f"dinov2_{name}.pth")
    ref = np.load(fixtures_dir / f"dinov2_{name}.npz")
    cfg = dinov2.config_from_state_dict(sd)
    assert cfg["num_heads"] == 2 and cfg["num_registers"] == (4 if "reg" in name else 0)
    model, params = dinov2.DinoV2(**cfg), dinov2.convert_state_dict(sd)
    for img_key, out_key, layer in [
        ("images", "features", None),
        ("images_native", "features_native", None),
        ("images", "features_layer1", 1),
    ]:
        out = model.apply({"params": params}, jnp.asarray(ref[img_key]), layer=layer)
        np.testing.assert_allclose(out, ref[out_key], rtol=1e-4, atol=1e-4)
    # the converted tree has exactly the module's parameter structure
    init = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 3)))["params"]
    assert jax.tree.structure(init) == jax.tree.structure(jax.tree.map(jnp.asarray, params))


def test_dinov2_bad_state_dict(tmp_path):
    save_state_dict(tmp_path / "x.pth", {"foo": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="not a DINOv2 state dict"):
        dinov2.load_dinov2(tmp_path / "x.pth")


def test_semantic_targets_and_loss():
    dino = dinov2.DinoV2(**dinov2.VARIANTS["test_tiny"])
    params = dino.init(jax.random.PRNGKey(0), jnp.zeros((1, 56, 56, 3)))["params"]
    images = np.random.default_rng(0).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    grids = semantic.precompute_grids(images, dino, params, batch_size=2, size=56, progress=False)
    assert grids.shape == (3, 4, 4, 32) and grids.dtype == np.float16
    t = semantic.targets_from_grid(grids, (1, 2, 4))
    assert t.shape == (3, 1 + 4 + 16, 32)
    np.testing.assert_allclose(t[:, 0], grids.astype(np.float32).mean((1, 2)), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(t[:, 5:], grids.reshape(3, 16, 32), rtol=1e-6)
    # per-scale mean, then mean over scales (each scale weighs the same)
    per_tok = jnp.concatenate([jnp.zeros((1, 1)), jnp.ones((1, 4)), 3 * jnp.ones((1, 16))], 1)
    total, per_scale = semantic.scale_mean(per_tok, np.array([0] + [1] * 4 + [2] * 16), 3)
    np.testing.assert_allclose(per_scale, [0, 1, 3])
    assert float(total) == pytest.approx(4 / 3)
    a = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(semantic.per_token_loss(a, 2 * a, "cosine"), [0.0], atol=1e-6)
    np.testing.assert_allclose(semantic.per_token_loss(a, 2 * a, "mse"), [0.5])
