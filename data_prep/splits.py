"""Train/val/test assignment, reproducible by seed: random by tile, or city-wise (every tile of
a city lands in the same split, so the test cities are unseen), or as given on disk."""

from __future__ import annotations

import collections

import numpy as np

from earthmapper_jax.errors import InputError

SPLIT_MODES = ("auto", "preset", "random", "city")


class SplitError(InputError, ValueError):
    """The split options do not fit the data."""


def assign(tasks, *, mode: str = "auto", val_fraction: float = 0.0, test_fraction: float = 0.0,
           seed: int = 0, val_cities=(), test_cities=()) -> dict[str, list]:
    """{split: tasks sorted by tile_id}. Tasks carry `.split` (preset, may be '') and `.city`.

    auto: the presets when every tile has one, else random. preset: the presets (tiles without
    one go to train). random: `test_fraction` and `val_fraction` of the tiles, the rest train.
    city: whole cities; `val_cities`/`test_cities` when given, else cities drawn by seed until
    the fractions of tiles are reached."""
    tasks = sorted(tasks, key=lambda t: t.tile_id)
    if mode not in SPLIT_MODES:
        raise SplitError(f"split mode must be one of {SPLIT_MODES}, got {mode!r}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SplitError(f"val/test fractions must be in [0, 1) with sum < 1, got {val_fraction}, {test_fraction}")
    if mode == "auto":
        mode = "preset" if tasks and all(t.split for t in tasks) else "random"
    out: dict[str, list] = collections.defaultdict(list)
    if mode == "preset":
        for t in tasks:
            out[t.split or "train"].append(t)
    elif mode == "random":
        n = len(tasks)
        order = np.random.default_rng(seed).permutation(n)
        n_test, n_val = round(n * test_fraction), round(n * val_fraction)
        for rank, i in enumerate(order):
            out["test" if rank < n_test else "val" if rank < n_test + n_val else "train"].append(tasks[i])
    else:
        by_city = collections.defaultdict(list)
        for t in tasks:
            if not t.city:
                raise SplitError(f"city-wise split but tile {t.tile_id} has no city (give cities by folder, "
                                 "sidecar column 'city' or the file name)")
            by_city[t.city].append(t)
        cities = sorted(by_city)
        unknown = (set(val_cities) | set(test_cities)) - set(cities)
        if unknown:
            raise SplitError(f"unknown cities {sorted(unknown)}; present: {cities}")
        if val_cities or test_cities:
            pick = {c: "test" for c in test_cities} | {c: "val" for c in val_cities}
        else:
            pick, n, got = {}, len(tasks), {"test": 0, "val": 0}
            for c in (cities[i] for i in np.random.default_rng(seed).permutation(len(cities))):
                for split, frac in (("test", test_fraction), ("val", val_fraction)):
                    if got[split] < round(n * frac) and len(pick) < len(cities) - 1:
                        pick[c] = split
                        got[split] += len(by_city[c])
                        break
        for c in cities:
            out[pick.get(c, "train")].extend(by_city[c])
    return {k: sorted(v, key=lambda t: t.tile_id) for k, v in sorted(out.items()) if v}
