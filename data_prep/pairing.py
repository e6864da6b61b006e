"""Finding the two images of each pair in a folder tree.

Each image gets a *key* (its path relative to the root, without extension, with the part that
names the modality removed); a satellite and a map image with the same key form a pair.
Images with no partner are reported as `unpaired`, never dropped silently.
"""

from __future__ import annotations

import os
import re

from earthmapper_jax.data_prep.common import IMAGE_EXTS

SAT_NAMES = ("sat", "satellite", "satellites", "aerial", "imagery", "image", "images", "img", "rs")
MAP_NAMES = ("map", "maps", "osm", "label", "labels", "mapimage")
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
              "test": "test", "testing": "test"}


def list_images(root) -> list[str]:
    """Relative posix paths of the image files under `root` (sorted, hidden entries skipped)."""
    out = []
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTS):
                out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def _strip_ext(rel: str) -> str:
    return os.path.splitext(rel)[0]


def modality_key(rel: str, sat_names=SAT_NAMES, map_names=MAP_NAMES) -> tuple[str, str] | None:
    """('sat'|'map', key) for a relative path, by a modality folder (`sat/…`, `city/map/…`) or a
    file-name prefix/suffix (`sat_0001.png`, `0001_map.png`); None when neither says."""
    parts = rel.split("/")
    sat_l, map_l = {n.lower() for n in sat_names}, {n.lower() for n in map_names}
    for i in reversed(range(len(parts) - 1)):  # innermost wins: images/sat/x, images/map/x
        low = parts[i].lower()
        if low in sat_l or low in map_l:
            key = "/".join(parts[:i] + parts[i + 1:])
            return ("sat" if low in sat_l else "map"), _strip_ext(key)
    stem = _strip_ext(parts[-1])
    for names, kind in ((sat_l, "sat"), (map_l, "map")):
        for n in sorted(names, key=len, reverse=True):
            m = re.fullmatch(rf"(?i){re.escape(n)}[_\-](.+)|(.+)[_\-]{re.escape(n)}", stem)
            if m:
                return kind, "/".join(parts[:-1] + [m.group(1) or m.group(2)])
    return None


def glob_to_regex(pattern: str) -> re.Pattern:
    """A glob with `*` (any characters, `/` included) and `?` as a regex whose groups capture the
    wildcard parts: their concatenation is the pairing key."""
    out = []
    for ch in pattern:
        out.append("(.*)" if ch == "*" else "(.)" if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z")


def key_by_pattern(rel: str, rx: re.Pattern) -> str | None:
    m = rx.match(rel)
    if not m:
        return None
    return "*".join(m.groups()) if m.groups() else _strip_ext(rel)


def pair_up(sat: dict[str, str], maps: dict[str, str]) -> tuple[list[tuple[str, str, str]], list]:
    """([(key, sat_rel, map_rel)], [(reason, rel, detail)]) from {key: rel} of both sides."""
    pairs = [(k, sat[k], maps[k]) for k in sorted(sat.keys() & maps.keys())]
    skips = [("unpaired", sat[k], "no map image with the same key") for k in sorted(sat.keys() - maps.keys())]
    skips += [("unpaired", maps[k], "no satellite image with the same key") for k in sorted(maps.keys() - sat.keys())]
    return pairs, skips


def add_unique(table: dict[str, str], key: str, rel: str, skips: list) -> None:
    """Adds rel under key; a second file with the same key (x.png + x.jpg) is a `duplicate`."""
    if key in table:
        skips.append(("duplicate", rel, f"same key as {table[key]}"))
    else:
        table[key] = rel


def split_from_path(rel: str, root) -> str:
    """The preset split of an image: its innermost train/val/test folder under ROOT, else ROOT's
    own name when ROOT is such a folder (converting `maps/val` alone gives split "val"), else ''."""
    for part in reversed(rel.split("/")[:-1]):
        if part.lower() in SPLIT_DIRS:
            return SPLIT_DIRS[part.lower()]
    return SPLIT_DIRS.get(os.path.basename(os.path.normpath(str(root))).lower(), "")


def context_from_key(key: str) -> tuple[str, str, str]:
    """(preset split, city, rest) from a key `[split/][city/]…/stem`: a leading train/val/test
    folder is the split; the next non-numeric folder, if any, the city."""
    parts = key.split("/")
    split = ""
    if len(parts) > 1 and parts[0].lower() in SPLIT_DIRS:
        split, parts = SPLIT_DIRS[parts[0].lower()], parts[1:]
    city = parts[0] if len(parts) > 1 and not parts[0].isdigit() else ""
    return split, city, "/".join(parts)
