"""The resumable state of an area translation: `OUT.parts/` beside the output.

    progress.json   {"settings": ..., "steps_done": n}, rewritten atomically after every step
    tiles/r_c.png   every finished tile's raw pixels (uint8, lossless), written atomically

A step's tiles are written before the step is counted, so a run killed at any point resumes
at the first step not counted and regenerates it with the same key: the result is the one an
uninterrupted run gives. The final output is assembled from the tiles and renamed into place;
the folder is removed after that.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.io import files, images

VERSION = 1


class Sidecar:
    def __init__(self, out, settings: dict, discard_other: bool = False):
        out = pathlib.Path(out)
        self.dir = out.parent / f"{out.name}.parts"
        self.settings = json.loads(json.dumps(settings))  # the form it has after a round trip
        self.steps_done = 0
        state = self.dir / "progress.json"
        if state.exists():
            old = json.loads(state.read_text())
            if old.get("version") == VERSION and old.get("settings") == self.settings:
                self.steps_done = int(old["steps_done"])
            elif discard_other:
                shutil.rmtree(self.dir)
            else:
                raise InputError(f"{self.dir}: an unfinished run with other settings; rerun it with the "
                                 "same ones to resume, or pass --overwrite to discard it")
        (self.dir / "tiles").mkdir(parents=True, exist_ok=True)

    def _tile(self, r: int, c: int) -> pathlib.Path:
        return self.dir / "tiles" / f"{r}_{c}.png"

    def save_tile(self, r: int, c: int, pixels: np.ndarray) -> None:
        images.write_image(self._tile(r, c), pixels)

    def load_tile(self, r: int, c: int) -> np.ndarray:
        return images.read_image(self._tile(r, c))

    def mark(self, steps_done: int) -> None:
        self.steps_done = steps_done
        files.write_json(self.dir / "progress.json",
                         {"version": VERSION, "settings": self.settings, "steps_done": steps_done})

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
