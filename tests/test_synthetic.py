"""Procedural synthetic city: determinism, shapes, ranges, alignment of the two modalities."""

import numpy as np

from earthmapper_jax.data import synthetic_city


def test_pair_is_deterministic_and_shaped():
    a, b = synthetic_city.make_pair(3, size=64), synthetic_city.make_pair(3, size=64)
    for x, y in ((a.satellite, b.satellite), (a.map, b.map)):
        assert x.shape == (64, 64, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, y)
    assert (a.lat, a.lon, a.tile_id) == (b.lat, b.lon, b.tile_id)
    c = synthetic_city.make_pair(4, size=64)
    assert not np.array_equal(a.satellite, c.satellite) and a.tile_id != c.tile_id


def test_coords_inside_bbox_and_any_size():
    bbox = (30.0, 120.0, 30.5, 120.5)
    for seed in range(5):
        p = synthetic_city.make_pair(seed, size=48, bbox=bbox)
        assert 30.0 <= p.lat <= 30.5 and 120.0 <= p.lon <= 120.5
    big = synthetic_city.make_pair(1, size=96)
    assert big.satellite.shape == (96, 96, 3)


def test_map_is_function_of_layout_with_flat_palette():
    p = synthetic_city.make_pair(5, size=64)
    # Same layout at the same size renders the same map; the map uses few flat colours.
    layout = synthetic_city.make_layout(synthetic_city.pair_seed(0, 0))
    m1, m2 = synthetic_city.render_map(layout, 64), synthetic_city.render_map(layout, 64)
    np.testing.assert_array_equal(m1, m2)
    assert len(np.unique(p.map.reshape(-1, 3), axis=0)) < 40
    assert p.satellite.std() > 5  # textured


def test_batch_ranges_and_generate_many():
    batch = synthetic_city.make_batch(3, 32, seed=1)
    assert batch["sat_image"].shape == (3, 32, 32, 3) and batch["map_image"].dtype == np.float32
    assert batch["coords"].shape == (3, 2)
    for k in ("sat_image", "map_image"):
        assert -1.0 <= batch[k].min() and batch[k].max() <= 1.0
    many = synthetic_city.generate_many(3, 32, seed=1)
    np.testing.assert_allclose(many[2].map / 127.5 - 1, batch["map_image"][2], atol=1e-6)
