"""Geo embedding, coordinate validation, DINOv2 port (against a PyTorch reference fixture)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.pth import load_state_dict, save_state_dict
from earthmapper_jax.models import dinov2, geo


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
