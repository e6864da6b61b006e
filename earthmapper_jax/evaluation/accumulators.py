"""Streaming accumulators, so that scoring a split is a loop of `update` calls.

    real, fake = FeatureSet(), FeatureSet()
    for batch in split:                       # fixed-size batches, any number of them
        real.update(inception_features(params, batch.real))
        fake.update(inception_features(params, batch.generated))
    scores = distribution_metrics(fake, real) # {"fid", "kid", "kid_std", "precision", ...}

    paired = PairedMeans()
    paired.update(ssim=..., psnr=..., rmse=..., lpips=...)   # per-image (B,) values
    paired.means()                                           # {"ssim": ..., "n": ...}

`FeatureSet` keeps the FID statistics as running sums (fixed 2048^2 float64, 32 MiB) and, for
KID and precision/recall, which need the samples themselves, the features as float32
(8 KiB per image; `keep=False` drops them for FID-only use). `save`/`load` write and read one
.npz atomically: the cached statistics of a split's real images, or a resume point.
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.evaluation import distributions
from earthmapper_jax.evaluation.inception import FEATURE_DIM
from earthmapper_jax.io.files import atomic_open


class FeatureSet:
    """The features of one image set: streamed FID statistics (+ the features themselves)."""

    def __init__(self, dim: int = FEATURE_DIM, keep: bool = True):
        self.stats = distributions.FeatureStats(dim)
        self.keep = keep
        self._chunks = []

    @property
    def n(self) -> int:
        return self.stats.n

    def update(self, features) -> None:
        f = np.asarray(features, np.float32)
        self.stats.update(f)
        if self.keep:
            self._chunks.append(f)

    def features(self) -> np.ndarray:
        if not self.keep:
            raise DataError("this feature set kept only FID statistics (keep=False); KID and "
                            "precision/recall need the features")
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros((0, self.stats.sum.shape[0]), np.float32)

    def save(self, path) -> None:
        arrays = self.stats.state()
        if self.keep:
            arrays["features"] = self.features()
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "FeatureSet":
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            stats = distributions.FeatureStats.from_state(arrays)
        except (OSError, ValueError, KeyError, InputError) as e:
            raise DataError(f"{path}: not a readable feature cache ({e}); delete it to recompute") from None
        s = cls(stats.sum.shape[0], keep="features" in arrays)
        s.stats = stats
        if s.keep:
            if arrays["features"].shape != (stats.n, stats.sum.shape[0]):
                raise DataError(f"{path}: holds {arrays['features'].shape[0]} features for "
                                f"{stats.n} images; delete it to recompute")
            s._chunks = [arrays["features"]]
        return s


def distribution_metrics(generated: FeatureSet, real: FeatureSet,
                         kid_subset_size: int = distributions.KID_SUBSET_SIZE,
                         kid_subsets: int = distributions.KID_SUBSETS,
                         k: int = distributions.PR_NEIGHBOURHOOD) -> dict:
    """FID, KID (raw and x KID_PAPER_SCALE), precision and recall of generated vs real.

    The KID subset size is capped at the smaller set (torch-fidelity would refuse instead);
    the size used is reported. With the features kept and fewer images than dimensions (the
    paper's 1098 test tiles, 2048-d) FID comes from the n x n Gram matrices: the same number
    (exact algebra, ~1e-8 relative) without two eigendecompositions of 2048 x 2048 matrices.
    """
    out = {"n_generated": generated.n, "n_real": real.n}
    small = min(generated.n, real.n) < generated.stats.sum.shape[0]
    if generated.keep and real.keep and small:
        out["fid"] = distributions.frechet_distance_from_features(generated.features(), real.features())
    else:
        out["fid"] = distributions.frechet_distance(*generated.stats.mean_cov(), *real.stats.mean_cov())
    if generated.keep and real.keep:
        g, r = generated.features(), real.features()
        m = min(kid_subset_size, len(g), len(r))
        mean, std = distributions.kid(g, r, subset_size=m, subsets=kid_subsets)
        p, rec = distributions.precision_recall(g, r, k=k)
        out.update(kid=mean, kid_std=std, kid_scaled=mean * distributions.KID_PAPER_SCALE,
                   kid_scale=distributions.KID_PAPER_SCALE, kid_subset_size=m,
                   kid_subsets=kid_subsets, precision=p, recall=rec)
    return out


class PairedMeans:
    """Running means of per-image paired metrics (SSIM, PSNR, RMSE, LPIPS, ...)."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def update(self, **values) -> None:
        for name, v in values.items():
            v = np.asarray(v, np.float64).reshape(-1)
            self.sums[name] = self.sums.get(name, 0.0) + float(v.sum())
            self.counts[name] = self.counts.get(name, 0) + v.size

    def means(self) -> dict:
        out = {name: self.sums[name] / self.counts[name] for name in self.sums if self.counts[name]}
        out["n"] = max(self.counts.values(), default=0)
        return out

    def state(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state) -> "PairedMeans":
        p = cls()
        p.sums, p.counts = dict(state["sums"]), {k: int(v) for k, v in state["counts"].items()}
        return p
