"""The tiling of a scene: overlapping tiles, the order they are generated in, and how their
pixels are combined (seams).

Tile (r, c) covers scene pixels [r·s, r·s + T) × [c·s, c·s + T), stride s = T − overlap; the
grid has enough tiles to cover the scene (the last ones reach past its edge, where the scene
is read edge-padded). Overlap < T/2, so a tile overlaps only its 8 neighbours.

Order. A tile depends on the tiles it overlaps that come before it: (r−1, c−1..c+1) and
(r, c−1). With the wavefront w = c + 2r all four lie on earlier waves and the tiles of one wave
are independent, so a wave is one batch (outpaint). Independent tiles (none / blend) go in
raster order. Either way tile (r, c) is needed only until (r, c+1) and (r+1, c−1..c+1) are done,
so a run holds a band of tiles, not the scene.

Pixels. Output block (r, c) = [r·s, (r+1)·s) × [c·s, (c+1)·s) (the last row/column to the
scene's edge) is covered by tiles (r−1..r, c−1..c) only, so it is final once tile (r, c) is.
Its pixels are Σ wₜ·tileₜ / Σ wₜ over those tiles with separable weights:
    blend / outpaint  a linear ramp across each overlap band (feathering)
    none              a hard cut in the middle of the band (the later tile wins past it)

    Plan(height, width, tile, overlap, seam)
    Plan.steps(batch) -> list of lists of (r, c): the units a run generates (and resumes) by
    Plan.compose(y0, y1, x0, x1, tiles) -> (uint8 (h, w, 3), covered (h, w) bool) from the
        tiles given ({(r, c): uint8 (T, T, 3)}); used for blocks and for out-painting canvases
    Plan.blocks() -> [((r, c), (y0, y1, x0, x1))]; Plan.users(r, c): the tiles that read (r, c)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from earthmapper_jax.errors import InputError

SEAMS = ("none", "blend", "outpaint")


@dataclasses.dataclass(frozen=True)
class Plan:
    height: int
    width: int
    tile: int
    overlap: int
    seam: str = "outpaint"

    def __post_init__(self):
        if self.seam not in SEAMS:
            raise InputError(f"--seam {self.seam!r}: expected one of {', '.join(SEAMS)}")
        if not 0 <= self.overlap < self.tile / 2:
            raise InputError(f"--overlap {self.overlap}: expected 0 <= overlap < {self.tile / 2:g} "
                             f"(half the model's {self.tile} px tile)")
        if self.height < self.tile or self.width < self.tile:
            raise InputError(f"scene {self.width}×{self.height} px is smaller than one {self.tile} px tile")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def rows(self) -> int:
        return max(1, math.ceil((self.height - self.overlap) / self.stride))

    @property
    def cols(self) -> int:
        return max(1, math.ceil((self.width - self.overlap) / self.stride))

    def origin(self, r: int, c: int) -> tuple[int, int]:
        return r * self.stride, c * self.stride

    def tiles(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.rows) for c in range(self.cols)]

    def steps(self, batch: int) -> list[list[tuple[int, int]]]:
        """Generation units: wave chunks (outpaint) or raster-order chunks of at most `batch`."""
        if self.seam != "outpaint":
            t = self.tiles()
            return [t[i:i + batch] for i in range(0, len(t), batch)]
        waves = [[] for _ in range(self.cols + 2 * (self.rows - 1))]
        for r, c in self.tiles():
            waves[c + 2 * r].append((r, c))
        return [w[i:i + batch] for w in waves for i in range(0, len(w), batch)]

    def users(self, r: int, c: int) -> list[tuple[int, int]]:
        """Tiles whose canvas or block reads tile (r, c)."""
        cand = [(r, c + 1), (r + 1, c - 1), (r + 1, c), (r + 1, c + 1)]
        return [(a, b) for a, b in cand if 0 <= a < self.rows and 0 <= b < self.cols]

    def blocks(self) -> list[tuple[tuple[int, int], tuple[int, int, int, int]]]:
        s = self.stride
        out = []
        for r, c in self.tiles():
            y1 = self.height if r == self.rows - 1 else (r + 1) * s
            x1 = self.width if c == self.cols - 1 else (c + 1) * s
            out.append(((r, c), (r * s, y1, c * s, x1)))
        return out

    def _ramp(self, first: bool, last: bool) -> np.ndarray:
        """1-D weight across one tile: `first`/`last` = no neighbour before/after it."""
        i = np.arange(self.tile, dtype=np.float64) + 0.5
        w = np.ones(self.tile)
        ov = self.overlap
        if ov == 0:
            return w
        if self.seam == "none":
            if not first:
                w *= i >= ov / 2
            if not last:
                w *= (self.tile - i) > ov / 2
        else:
            if not first:
                w *= np.minimum(1.0, i / ov)
            if not last:
                w *= np.minimum(1.0, (self.tile - i) / ov)
        return w

    def weight(self, r: int, c: int) -> np.ndarray:
        """(T, T) weight of tile (r, c)'s pixels."""
        wy = self._ramp(r == 0, r == self.rows - 1)
        wx = self._ramp(c == 0, c == self.cols - 1)
        return wy[:, None] * wx[None, :]

    def compose(self, y0: int, y1: int, x0: int, x1: int, tiles: dict):
        """Weighted combination of `tiles` over scene rectangle [y0, y1) × [x0, x1)."""
        acc = np.zeros((y1 - y0, x1 - x0, 3))
        wsum = np.zeros((y1 - y0, x1 - x0))
        for (r, c), px in tiles.items():
            ty, tx = self.origin(r, c)
            sy, ey = max(y0, ty), min(y1, ty + self.tile)
            sx, ex = max(x0, tx), min(x1, tx + self.tile)
            if sy >= ey or sx >= ex:
                continue
            w = self.weight(r, c)[sy - ty:ey - ty, sx - tx:ex - tx]
            acc[sy - y0:ey - y0, sx - x0:ex - x0] += w[..., None] * px[sy - ty:ey - ty, sx - tx:ex - tx]
            wsum[sy - y0:ey - y0, sx - x0:ex - x0] += w
        covered = wsum > 0
        out = np.where(covered[..., None], acc / np.maximum(wsum, 1e-12)[..., None], 0.0)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), covered

    def neighbours_before(self, r: int, c: int) -> list[tuple[int, int]]:
        """The earlier tiles that overlap tile (r, c) (its out-painting context)."""
        cand = [(r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r, c - 1)]
        return [(a, b) for a, b in cand if 0 <= a < self.rows and 0 <= b < self.cols]
