"""Train/val/test assignment, reproducible by seed: random by tile, or city-wise (every tile of
a city lands in the same split, so the test cities are unseen), or as given on disk.

A split the options ask for and that comes out empty, or a city-wise split that cannot come
within one city of its fraction, is refused (SplitError) rather than written.
"""

from __future__ import annotations

import collections

import numpy as np

from earthmapper_jax.errors import InputError

SPLIT_MODES = ("auto", "preset", "random", "city")


class SplitError(InputError, ValueError):
    """The split options do not fit the data."""


def _pick_cities(by_city: dict, order, n: int, fractions) -> dict:
    """{city: split}: per split (smallest target first), the cities (in `order`) that each bring
    its tile count closer to round(n * fraction), which ends within half a city of the target;
    when none does, the smallest city left if it is at most twice the target (never more than
    one city off), else none (the caller refuses the empty split). One city stays in train."""
    pick = {}
    for split, frac in sorted(fractions, key=lambda sf: sf[1]):
        target, got = round(n * frac), 0
        if target <= 0:
            continue
        for c in order:
            size = len(by_city[c])
            if c in pick or len(pick) >= len(by_city) - 1:
                continue
            if abs(got + size - target) < abs(got - target):
                pick[c] = split
                got += size
        left = sorted((len(by_city[c]), c) for c in order if c not in pick)
        if not got and len(left) > 1 and left[0][0] <= 2 * target:
            pick[left[0][1]] = split
    return pick


def _check_not_empty(out: dict, asked: dict, how: str) -> None:
    for split, frac in asked.items():
        if frac > 0 and not out.get(split):
            raise SplitError(f"--{split}-fraction {frac} gives an empty {split} split ({how}); "
                             f"raise the fraction or give more tiles")


def assign(tasks, *, mode: str = "auto", val_fraction: float = 0.0, test_fraction: float = 0.0,
           seed: int = 0, val_cities=(), test_cities=()) -> dict[str, list]:
    """{split: tasks sorted by tile_id}. Tasks carry `.split` (preset, may be '') and `.city`.

    auto: the presets when every tile has one, else random. preset: the presets (tiles without
    one go to train). random: `test_fraction` and `val_fraction` of the tiles, the rest train.
    city: whole cities; `val_cities`/`test_cities` when given, else cities drawn by seed, each
    split within one city of its fraction of the tiles."""
    tasks = sorted(tasks, key=lambda t: t.tile_id)
    if mode not in SPLIT_MODES:
        raise SplitError(f"split mode must be one of {SPLIT_MODES}, got {mode!r}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SplitError(f"val/test fractions must be in [0, 1) with sum < 1, got {val_fraction}, {test_fraction}")
    asked = {"test": test_fraction, "val": val_fraction}
    if mode == "auto":
        mode = "preset" if tasks and all(t.split for t in tasks) else "random"
        if mode == "preset" and (val_fraction or test_fraction):
            raise SplitError("the tiles come with their splits (train/val/test folders or a "
                             "sidecar 'split' column) and --val-fraction/--test-fraction were "
                             "given too: drop the fractions, or pass --split random or city")
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
        _check_not_empty(out, asked, f"{n} tiles")
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
            order = [cities[i] for i in np.random.default_rng(seed).permutation(len(cities))]
            pick = _pick_cities(by_city, order, len(tasks), (("test", test_fraction), ("val", val_fraction)))
            sizes = sorted(len(v) for v in by_city.values())
            _check_not_empty({s: [c for c in pick if pick[c] == s] for s in asked}, asked,
                             f"{len(cities)} cities of {sizes[0]} to {sizes[-1]} tiles; no set of "
                             "whole cities comes closer")
        for c in cities:
            out[pick.get(c, "train")].extend(by_city[c])
    if mode != "preset" and not out.get("train"):  # a preset split may be converted alone
        raise SplitError(f"no tiles left for the train split ({len(tasks)} tiles, mode {mode})")
    return {k: sorted(v, key=lambda t: t.tile_id) for k, v in sorted(out.items()) if v}


def describe(splits: dict) -> str:
    """'train 80 (80.0 %), val 10 (10.0 %), test 10 (10.0 %)'."""
    n = sum(len(v) for v in splits.values()) or 1
    order = sorted(splits, key=lambda s: (("train", "val", "test").index(s)
                                          if s in ("train", "val", "test") else 3, s))
    return ", ".join(f"{s} {len(splits[s])} ({100 * len(splits[s]) / n:.1f} %)" for s in order)
