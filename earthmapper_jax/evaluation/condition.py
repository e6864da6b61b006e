"""Does a translation follow its source? The condition-use instrument (issue 15).

A model that learnt only the marginals of each modality produces plausible maps and satellite
images that have nothing to do with their source; FID and the loss curve do not see it. These
figures do, on held-out tiles, per direction (sat2map: condition = satellite half, target = map
half; map2sat the reverse):

Teacher-forced (no sampling; cheap enough for the training eval hook):
    ce_real / ce_shuffled / ce_none   cross-entropy (nats/token) of the target half with its
        real condition, with the condition of another tile of the batch (a derangement: tile
        i gets tile i+1's condition tokens), and with no condition (the learned null branch)
    gain = ce_shuffled - ce_real      the conditioning gain, per scale and over all target
        tokens, with a per-tile bootstrap 95 % CI; > 0 means the target follows its source
    ce_unigram                        the per-scale token frequencies of the training targets
        (add-one smoothed), the CE a model that knows nothing per tile reaches
On decoded samples (images in [-1, 1]):
    layout_gap(generated, truth)      similarity to the own ground truth minus to a shuffled
        one (the same derangement), per tile, with CI; "ssim" (evaluation/pixels.ssim) and
        "block_corr" (Pearson correlation of 8×8 block means of the grey image; blur-robust)
    ModalityClassifier                a fixed logistic regression on 8 colour/texture
        statistics, fitted on real tiles of both modalities; reports its own held-out accuracy;
        share_right(images, modality) = share of outputs it calls the expected modality

The model interface is a plain function, so constructed models can be measured too (tests):
    logits_fn(coords, sat_flat, map_flat, cond_m, null_cond) -> target-half logits (B, Σpn², V)
        flat tokens (B, Σpn²) int32 of both halves (the target's for teacher forcing), cond_m
        the condition's modality (SAT/MAP, static), null_cond: use the null branch
    earthmapper_logits_fn(module, params, tok_module, tok_params, directed) adapts an
        EarthMapper (with directed_rate > 0 it trains translation rows, and is measured in
        them, as `translate` samples); earthmapper_target_logits is its traceable core

    teacher_forced(logits_fn, coords, sat_flat, map_flat, patch_nums) -> per-tile NLL arrays
    condition_report(nll, patch_nums, train_tokens=None) -> the dict of figures
    meets_target(report, min_scale=1) -> (ok, reasons)   the issue's teacher-forced target
    traced_gains(target_logits, sat_flat, map_flat)     one batch, traceable (training eval)
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.evaluation.pixels import ssim
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.earthmapper import coloc_inputs
from earthmapper_jax.models.layout import MAP, SAT, from_joint
from earthmapper_jax.models.var_mode import tokenizer_parts
from earthmapper_jax.sampling import translate
from earthmapper_jax.scales import flatten_tokens, scale_offsets, split_tokens

DIRECTIONS = {"sat2map": (SAT, MAP), "map2sat": (MAP, SAT)}  # name -> (condition, target)
BRANCHES = ("real", "shuffled", "none")
BOOTSTRAP = 1000
BLOCK = 8


def derangement(n: int) -> np.ndarray:
    """Tile i gets tile i+1's condition (no tile keeps its own; needs n >= 2)."""
    return np.roll(np.arange(n), -1)


def bootstrap_ci(per_tile, n: int = BOOTSTRAP, seed: int = 0, level: float = 0.95):
    """Percentile CI of the mean of per-tile values (N,) or (N, K) -> (lo, hi) of shape () / (K,)."""
    x = np.asarray(per_tile, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), (n, len(x)))
    means = x[idx].mean(1)
    a = (1 - level) / 2
    return np.quantile(means, a, axis=0), np.quantile(means, 1 - a, axis=0)


# ----------------------------------------------------------------------------- teacher-forced


def earthmapper_target_logits(module, params, tok_module, tok_params, coords, sat_flat, map_flat,
                              cond_m: int, null_cond, directed: bool = True):
    """Traceable: target-half logits (B, Σpn², V) of an EarthMapper module given both halves'
    flat tokens, the condition's modality cond_m (static) and null_cond (bool, traced ok)."""
    pns = tuple(module.patch_nums)
    tp = {"params": tok_params}
    tf = [tok_module.apply(tp, split_tokens(f, pns), method="teacher_forcing_inputs")
          for f in (sat_flat, map_flat)]
    B = sat_flat.shape[0]
    null = [None, None]
    null[cond_m] = jnp.full((B,), null_cond)
    kw = {}
    if directed:
        kw = dict(ids_sat=sat_flat, ids_map=map_flat, direction=jnp.full((B,), cond_m, jnp.int32),
                  **coloc_inputs(module.coloc_cond, tok_module, tok_params, (sat_flat, map_flat), pns))
    logits, _ = module.apply({"params": params}, jnp.asarray(coords, jnp.float32), tf[0], tf[1],
                             null_sat=null[0], null_map=null[1], **kw)
    return from_joint(logits, pns)[1 - cond_m]


def earthmapper_logits_fn(module, params, tok_module, tok_params, directed: bool = True) -> Callable:
    """logits_fn of an EarthMapper module (module doc); directed: it trained translation rows
    (directed_rate > 0), so it translates in them. Jitted once per condition modality."""
    def run(params, tok_params, coords, sat_flat, map_flat, cond_m, null_cond):
        return earthmapper_target_logits(module, params, tok_module, tok_params, coords, sat_flat,
                                         map_flat, cond_m, null_cond, directed)

    jitted = jax.jit(run, static_argnums=(5,))

    def logits_fn(coords, sat_flat, map_flat, cond_m, null_cond):
        return jitted(params, tok_params, coords, jnp.asarray(sat_flat, jnp.int32),
                      jnp.asarray(map_flat, jnp.int32), int(cond_m), bool(null_cond))

    return logits_fn


def traced_gains(target_logits, sat_flat, map_flat) -> dict:
    """Traceable batch figures for the training eval hook (no CI): per direction the mean
    conditioning gain over all target tokens (cond_gain_<dir>) and the gain over the null
    branch (cond_gain_none_<dir>). target_logits(sat, map, cond_m, null_cond) -> (B, Σpn², V)."""
    out = {}
    for d, (cm, tm) in DIRECTIONS.items():
        halves = [sat_flat, map_flat]
        ce = {}
        for branch in BRANCHES:
            h = list(halves)
            if branch == "shuffled":
                h[cm] = jnp.roll(h[cm], -1, axis=0)  # derangement(B)
            lg = target_logits(h[0], h[1], cm, branch == "none")
            logp = jax.nn.log_softmax(lg.astype(jnp.float32), -1)
            ce[branch] = -jnp.mean(jnp.take_along_axis(logp, halves[tm][..., None], -1))
        out[f"cond_gain_{d}"] = ce["shuffled"] - ce["real"]
        out[f"cond_gain_none_{d}"] = ce["none"] - ce["real"]
    return out


def _target_nll(logits, target):
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    return np.asarray(-jnp.take_along_axis(logp, jnp.asarray(target)[..., None], -1)[..., 0])


def _batches(n: int, size: int):
    """[start, end) batches of >= 2 tiles (a lone last tile joins the batch before it)."""
    edges = list(range(0, n, max(2, size))) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < 2:
        edges.pop(-2)
    return list(zip(edges[:-1], edges[1:]))


def teacher_forced(logits_fn, coords, sat_flat, map_flat, batch_size: int = 32) -> dict:
    """{direction: {branch: per-tile, per-token NLL of the target half (N, Σpn²)}}; the shuffled
    branch permutes the condition tokens inside each batch (derangement; N >= 2)."""
    sat_flat, map_flat = np.asarray(sat_flat), np.asarray(map_flat)
    coords = np.asarray(coords, np.float32)
    out = {d: {b: [] for b in BRANCHES} for d in DIRECTIONS}
    for s, e in _batches(len(sat_flat), batch_size):
        halves = [sat_flat[s:e], map_flat[s:e]]
        perm = derangement(e - s)
        for d, (cm, tm) in DIRECTIONS.items():
            for branch in BRANCHES:
                h = list(halves)
                if branch == "shuffled":
                    h[cm] = h[cm][perm]
                logits = logits_fn(coords[s:e], h[0], h[1], cm, branch == "none")
                out[d][branch].append(_target_nll(logits, halves[tm]))
    return {d: {b: np.concatenate(v) for b, v in br.items()} for d, br in out.items()}


def unigram_ce(train_tokens, test_tokens, patch_nums, vocab_size: int) -> np.ndarray:
    """Per-tile, per-scale CE (N, K) of test tokens under the per-scale add-one-smoothed unigram
    of the training tokens (both (n, Σpn²) flat)."""
    train_tokens, test_tokens = np.asarray(train_tokens), np.asarray(test_tokens)
    out = []
    for b, e in scale_offsets(patch_nums):
        counts = np.bincount(train_tokens[:, b:e].ravel(), minlength=vocab_size) + 1.0
        logp = np.log(counts / counts.sum())
        out.append(-logp[test_tokens[:, b:e]].mean(1))
    return np.stack(out, 1)


def per_scale(nll, patch_nums) -> np.ndarray:
    """(N, Σpn²) -> per-tile scale means (N, K)."""
    return np.stack([nll[:, b:e].mean(1) for b, e in scale_offsets(patch_nums)], 1)


def condition_report(nll: dict, patch_nums, train_tokens: Optional[dict] = None,
                     test_tokens: Optional[dict] = None, vocab_size: int = 0) -> dict:
    """Figures of `teacher_forced` output per direction (lists per scale; CIs as [lo, hi]).
    train_tokens/test_tokens {"sat": (n, Σpn²), "map": ...} add the unigram baseline."""
    rep = {}
    names = ("sat", "map")
    for d, br in nll.items():
        _, tm = DIRECTIONS[d]
        ps = {b: per_scale(v, patch_nums) for b, v in br.items()}
        gain_tiles = ps["shuffled"] - ps["real"]
        gain_all = br["shuffled"].mean(1) - br["real"].mean(1)
        lo, hi = bootstrap_ci(gain_tiles)
        alo, ahi = bootstrap_ci(gain_all)
        r = {f"ce_{b}": ps[b].mean(0).tolist() for b in BRANCHES}
        r.update(gain=gain_tiles.mean(0).tolist(), gain_ci=np.stack([lo, hi], 1).tolist(),
                 gain_all=float(gain_all.mean()), gain_all_ci=[float(alo), float(ahi)],
                 ce_real_all=float(br["real"].mean()), n_tiles=int(len(gain_all)))
        if train_tokens is not None and test_tokens is not None:
            r["ce_unigram"] = unigram_ce(train_tokens[names[tm]], test_tokens[names[tm]],
                                         patch_nums, vocab_size).mean(0).tolist()
        rep[d] = r
    return rep


def meets_target(report: dict, min_scale: int = 1) -> tuple:
    """The issue's teacher-forced target: gain CI above 0 at every scale >= min_scale, both
    directions. -> (ok, list of the failing (direction, scale, lo) )."""
    fails = []
    for d, r in report.items():
        for k, (lo, _) in enumerate(r["gain_ci"]):
            if k >= min_scale and not lo > 0:
                fails.append((d, k, round(float(lo), 5)))
    return not fails, fails


# ----------------------------------------------------------------------------- decoded samples


def _unit(x):
    return (np.asarray(x, np.float32) + 1.0) / 2.0


def block_corr(x, y, block: int = BLOCK) -> np.ndarray:
    """Per-image Pearson correlation of the block×block means of the grey images (B,)."""
    def blocks(a):
        g = _unit(a).mean(-1)
        B, H, W = g.shape
        g = g[:, : H // block * block, : W // block * block]
        return g.reshape(B, H // block, block, W // block, block).mean((2, 4)).reshape(B, -1)
    a, b = blocks(x), blocks(y)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-12), 0.0)


SIMILARITIES = {"ssim": lambda x, y: np.asarray(ssim(jnp.asarray(_unit(x)), jnp.asarray(_unit(y)))),
                "block_corr": block_corr}


def layout_gap(generated, truth) -> dict:
    """{similarity: {gap, ci, own, shuffled}}: similarity of each output to its own ground truth
    minus to the next tile's (derangement), per tile, mean and bootstrap CI."""
    perm = derangement(len(truth))
    out = {}
    for name, f in SIMILARITIES.items():
        own, other = f(generated, truth), f(generated, np.asarray(truth)[perm])
        lo, hi = bootstrap_ci(own - other)
        out[name] = dict(gap=float(np.mean(own - other)), ci=[float(lo), float(hi)],
                         own=float(np.mean(own)), shuffled=float(np.mean(other)))
    return out


def modality_features(images) -> np.ndarray:
    """(B, 8) colour/texture statistics of images in [-1, 1]: mean and std of the grey level,
    mean saturation, mean |horizontal| and |vertical| gradient, share of near-flat neighbour
    pairs, number of distinct coarse colours / 64, grey-level range."""
    x = _unit(images)
    g = x.mean(-1)
    sat = x.max(-1) - x.min(-1)
    dx, dy = np.abs(np.diff(g, axis=2)), np.abs(np.diff(g, axis=1))
    flat = 0.5 * ((dx < 1 / 255).mean((1, 2)) + (dy < 1 / 255).mean((1, 2)))
    q = np.clip((x * 7.999).astype(np.int32), 0, 7)
    codes = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
    distinct = np.array([len(np.unique(c)) for c in codes]) / 64.0
    rng = np.quantile(g.reshape(len(g), -1), 0.95, 1) - np.quantile(g.reshape(len(g), -1), 0.05, 1)
    return np.stack([g.mean((1, 2)), g.std((1, 2)), sat.mean((1, 2)), dx.mean((1, 2)),
                     dy.mean((1, 2)), flat, distinct, rng], 1).astype(np.float64)


class ModalityClassifier:
    """Logistic regression (satellite = 1) on standardised modality_features; fit() holds out
    every 4th tile of each modality and records its accuracy there (`accuracy`)."""

    def __init__(self, mean, scale, w, b, accuracy):
        self.mean, self.scale, self.w, self.b, self.accuracy = mean, scale, w, b, accuracy

    @classmethod
    def fit(cls, sat_images, map_images, steps: int = 500, lr: float = 0.5, l2: float = 1e-3):
        fs, fm = modality_features(sat_images), modality_features(map_images)
        x = np.concatenate([fs, fm])
        y = np.concatenate([np.ones(len(fs)), np.zeros(len(fm))])
        held = np.zeros(len(x), bool)
        held[::4] = True
        mean, scale = x[~held].mean(0), x[~held].std(0) + 1e-8
        z = (x - mean) / scale
        w, b = np.zeros(x.shape[1]), 0.0
        for _ in range(steps):  # full-batch gradient descent on the log loss: convex, tiny
            p = 1 / (1 + np.exp(-(z[~held] @ w + b)))
            g = p - y[~held]
            w -= lr * (z[~held].T @ g / len(g) + l2 * w)
            b -= lr * g.mean()
        acc = float((((z[held] @ w + b) > 0) == (y[held] > 0)).mean())
        return cls(mean, scale, w, b, acc)

    def is_satellite(self, images) -> np.ndarray:
        return ((modality_features(images) - self.mean) / self.scale) @ self.w + self.b > 0

    def share_right(self, images, modality: str) -> float:
        """Share of images the classifier calls `modality` ("sat" / "map")."""
        s = self.is_satellite(images)
        return float(np.mean(s if modality == "sat" else ~s))


# ----------------------------------------------------------------------------- everything


def evaluate_translation(model, sat_images, map_images, coords, *, train_tokens=None,
                         classifier: Optional[ModalityClassifier] = None, rng=None,
                         batch_size: int = 32, **sample_options) -> dict:
    """Every figure of the module doc for a loaded EarthMapper `Model` on held-out pairs
    (images in [-1, 1], coords (N, 2)): {"teacher_forced": condition_report, "target": [ok,
    fails], per direction {"layout_gap", "right_modality"}, "classifier_accuracy"}.
    train_tokens {"sat", "map"} (n, Σpn²) add the unigram baseline; classifier: calibrated on
    real tiles (default: fitted on these held-out tiles, its accuracy on every 4th of them)."""
    pns = tuple(model.config.patch_nums)
    tok = model.tokenizer
    enc = lambda x: np.concatenate([np.asarray(flatten_tokens(tok.encode(x[i:i + batch_size])))  # noqa: E731
                                    for i in range(0, len(x), batch_size)])
    sat_flat, map_flat = enc(sat_images), enc(map_images)
    tok_module, tok_params = tokenizer_parts(tok)
    module = em.build(model.config)
    directed = float(model.config.get("directed_rate", 0.0)) > 0
    fn = earthmapper_logits_fn(module, model.params, tok_module, tok_params, directed)
    nll = teacher_forced(fn, coords, sat_flat, map_flat, batch_size)
    rep = condition_report(nll, pns, train_tokens, {"sat": sat_flat, "map": map_flat},
                           int(model.config.vocab_size))
    out = {"teacher_forced": rep, "target": list(meets_target(rep))}
    classifier = classifier or ModalityClassifier.fit(sat_images, map_images)
    out["classifier_accuracy"] = classifier.accuracy
    rng = jax.random.key(0) if rng is None else rng
    for d, (src, truth, want) in {"sat2map": (sat_images, map_images, "map"),
                                  "map2sat": (map_images, sat_images, "sat")}.items():
        gen = []
        for i in range(0, len(src), batch_size):
            rng, key = jax.random.split(rng)
            gen.append(np.asarray(translate(model, src[i:i + batch_size], d, key,
                                            coords=coords[i:i + batch_size], **sample_options)[1]))
        gen = np.concatenate(gen)
        out[d] = {"layout_gap": layout_gap(gen, truth),
                  "right_modality": classifier.share_right(gen, want)}
    return out
