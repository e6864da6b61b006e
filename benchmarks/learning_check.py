"""A minutes-long CPU learning check of EarthMapper on the procedural synthetic city.

Used by tests/test_earthmapper_learning.py (`run()`: depth 2, width 64, 2400 pairs of 48 px,
800 steps, ~1-2 min of training on 2 cores) and benchmarks/earthmapper_learning.py (layout and
sampler comparisons). Nothing here is needed to train or sample, so it lives beside the
benchmarks, not in the package; both import it with the repository root on sys.path
(`from benchmarks import learning_check`).

Tokenizer. Training a VQ-VAE takes far longer than the check may, and the tokens of a random
VQ-VAE (or of a PCA of pixel patches) carry almost no shared meaning between a satellite tile
and its map: measured on 48 px tiles, knowing the satellite token at a position predicts the
map token there barely better than the majority token (e.g. 0.13 -> 0.16). The check therefore
uses a small *fitted semantic* tokenizer that keeps the package's multi-scale residual quantizer
(teacher-forcing inputs, next-scale inputs, embeddings: the real code paths):
  pixels -> land-cover class by a Gaussian (QDA) classifier on (RGB, 3×3 and 5×5 box means)
  fitted on training pixels of both modalities (one Gaussian per modality and class, so it needs
  no modality flag; ~80 % right on held-out satellite pixels, ~93 % on map pixels) -> class
  fractions of each p×p patch (from every 2nd pixel) = the (S/p, S/p, 6) feature map -> the
  residual quantizer, whose codebook is k-means of the per-scale residuals (a few Lloyd rounds
  through the residual loop); Phi off.
Same-position satellite -> map token lookup then beats the majority token 1.5-2× per scale.
Its "decoder" turns f_hat back into class fractions: maps are scored by the patch class
(argmax) accuracy too.

Baselines for sat->map on held-out tiles (greedy decoding, no guidance):
  majority    the most frequent training map token of each scale, everywhere;
  coords_only the same model generating the pair from the coordinates alone (the map half of
              joint generation): what the model knows without the satellite image;
  lookup      reading the map off the satellite without learning: at every token position, the
              map token seen most often in training with the held-out tile's satellite token at
              that position (the majority token of the position where that pair never occurred).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earthmapper_jax import scales
from earthmapper_jax.data import synthetic_city as synthetic
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.loading import Model
from earthmapper_jax.sampling import earthmapper_sampler as S
from earthmapper_jax.train import earthmapper_task as emt
from earthmapper_jax.tokenizer.resize import area_resize, bicubic_resize

IMAGE = 48
PATCH = 8
PATCH_NUMS = (1, 2, 3, 4, 6)
NUM_CLASSES = 6
# (image px, patch_nums): "small" is the test's; "paper" has the paper's 10 scales (VAR's 256²
# schedule) on 64 px tiles, 4 px per token of the last scale.
GEOMETRIES = {"small": (IMAGE, PATCH_NUMS), "paper": (64, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))}


def _pixel_features(images):
    """(B, H, W, 3) -> (B, H, W, 9): RGB and its 3×3 and 5×5 box means (edge-replicated)."""
    x = np.asarray(images, np.float32)
    H, W = x.shape[1:3]
    out = [x]
    for r in (1, 2):
        pad = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
        out.append(sum(pad[:, i:i + H, j:j + W] for i in range(2 * r + 1) for j in range(2 * r + 1)) / (2 * r + 1) ** 2)
    return np.concatenate(out, -1)


class SemanticTokenizer(tok_lib.Tokenizer):
    """A Tokenizer whose encoder is a fixed pixel classifier + patch class fractions."""

    def __init__(self, params, config, gaussians):
        super().__init__(params, config)
        self.gaussians = gaussians  # (means (G, d), inverse covariances (G, d, d), logdets (G,), class (G,))

    def classify(self, images, stride: int = 1):
        """Per-pixel class (every `stride`-th pixel): the most likely of one Gaussian per
        (modality, class) (QDA)."""
        mean, inv, logdet, cls = self.gaussians
        f = _pixel_features(images)[:, ::stride, ::stride]
        chol = np.linalg.cholesky(inv)  # (f - m)ᵀ inv (f - m) = |(f - m) chol|², one matmul
        G, d = mean.shape
        proj = f.reshape(-1, d) @ chol.transpose(1, 0, 2).reshape(d, G * d)
        proj = proj.reshape(-1, G, d) - np.einsum("gd,gde->ge", mean, chol)
        score = np.square(proj).sum(-1) + logdet
        return cls[score.argmin(-1)].reshape(f.shape[:-1])

    def features(self, images):
        """(B, S/p, S/p, 6) class fractions of each p×p patch, from every 2nd pixel."""
        B, H, W, _ = np.shape(images)
        onehot = np.eye(NUM_CLASSES, dtype=np.float32)[self.classify(images, stride=2)]
        g = int(self.config["patch_nums"][-1])
        q = H // g // 2
        return jnp.asarray(onehot.reshape(B, g, q, g, q, NUM_CLASSES).mean((2, 4)))

    def encode(self, images):
        f = self.features(self.check_images(images))
        return self.model.apply({"params": self.params}, f,
                                method=lambda m, f: m.quantize.encode_to_indices(f))

    def patch_classes(self, indices):
        """Token maps -> (B, g, g) argmax class of the reconstructed class fractions."""
        return np.asarray(self.fhat(indices)).argmax(-1)


def _kmeans(x, k, rng, iters=10):
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        a = ((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]).argmin(1)
        for j in range(k):
            sel = a == j
            c[j] = x[sel].mean(0) if sel.any() else x[rng.integers(len(x))]
    return c.astype(np.float32)


def fit_tokenizer(sat, mp, labels, vocab=64, rounds=3, seed=0, patch_nums=PATCH_NUMS) -> SemanticTokenizer:
    """Fits the classifier (on `labels`, the shared class raster) and the residual codebook."""
    rng = np.random.default_rng(seed)
    mean, inv, logdet, cls = [], [], [], []
    y = labels[:, ::2, ::2].reshape(-1)
    for images in (sat, mp):
        f = _pixel_features(images)[:, ::2, ::2]
        f = f.reshape(-1, f.shape[-1])
        for c in range(NUM_CLASSES):
            fc = f[y == c]
            if len(fc) > f.shape[1]:
                cov = np.cov(fc.T) + 1e-3 * np.eye(f.shape[1])
                mean.append(fc.mean(0))
                inv.append(np.linalg.inv(cov))
                logdet.append(np.linalg.slogdet(cov)[1])
                cls.append(c)
    gaussians = (np.stack(mean).astype(np.float32), np.stack(inv).astype(np.float32),
                 np.asarray(logdet, np.float32), np.asarray(cls))
    image = int(np.shape(sat)[1])
    levels = int(round(np.log2(image // patch_nums[-1])))  # the (unused) conv stack's downsampling
    cfg = dict(ch=32, ch_mult=(1, 2, 2, 4)[: levels + 1], num_res_blocks=1, using_sa=False, using_mid_sa=False,
               vocab_size=vocab, z_channels=NUM_CLASSES, image_size=image, patch_nums=tuple(patch_nums),
               quant_resi=0.0)
    params = dict(tok_lib.init_params(cfg, jax.random.key(seed)))
    tok = SemanticTokenizer(params, cfg, gaussians)
    f = jnp.concatenate([tok.features(sat), tok.features(mp)])
    g, z = f.shape[1], f.shape[-1]
    codebook = _kmeans(np.concatenate([np.asarray(area_resize(f, pn)).reshape(-1, z) for pn in patch_nums]), vocab, rng)
    for _ in range(rounds):  # Lloyd rounds through the residual loop: codes for every scale
        rest, res = f, []
        for pn in patch_nums:
            zz = area_resize(rest, pn) if pn != g else rest
            h = jnp.asarray(codebook)[jnp.argmin(jnp.sum(jnp.square(zz[..., None, :] - codebook), -1), -1)]
            res.append(np.asarray(zz).reshape(-1, z))
            rest = rest - (bicubic_resize(h, g) if pn != g else h)
        codebook = _kmeans(np.concatenate(res), vocab, rng)
    params["quantize"] = dict(params["quantize"], codebook=jnp.asarray(codebook))
    tok.params = params
    return tok


def make_data(n, seed=0, image=IMAGE):
    """n synthetic pairs at `image` px: satellite, map in [-1, 1], coords (n, 2), labels (n, S, S)."""
    sat, mp, coords, labels = [], [], [], []
    for i in range(n):
        s = synthetic.pair_seed(seed, i)
        layout = synthetic.make_layout(s)
        lab = synthetic.render_labels(layout, image)
        sat.append(synthetic.render_satellite(layout, image, s, lab))
        mp.append(synthetic.render_map(layout, image))
        coords.append((layout.lat, layout.lon))
        labels.append(lab)
    f = lambda x: np.stack(x).astype(np.float32) / 127.5 - 1.0  # noqa: E731
    return f(sat), f(mp), np.asarray(coords, np.float32), np.stack(labels)


def tokens_of(tok, images, batch=128):
    return np.concatenate([np.asarray(scales.flatten_tokens(tok.encode(images[i:i + batch])))
                           for i in range(0, len(images), batch)])


def train(tok, tokens_sat, tokens_map, coords, *, steps, batch=32, lr=2e-3, depth=2, width=128,
          within_scale="group", init_adaln_gamma=1.0, seed=0, log=None, **model_overrides):
    """Trains a tiny EarthMapper on pre-tokenised pairs; returns (Model, seconds, last metrics).
    init_adaln_gamma 1.0: VAR's 1e-5 (for fine-tuning huge models) makes a tiny model trained
    from scratch learn cross-token attention far more slowly."""
    mc = em.model_config("tiny", patch_nums=tuple(tok.config["patch_nums"]), vocab_size=tok.vocab_size, cvae=tok.z_channels,
                         depth=depth, embed_dim=width, num_heads=max(1, width // 64), si_layer=0,
                         si_weight=0.0, drop_path_rate=0.0, within_scale=within_scale,
                         init_adaln_gamma=init_adaln_gamma, **model_overrides)
    params = em.init_params(mc, jax.random.key(seed))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 20)
    opt = optax.chain(optax.clip_by_global_norm(2.0), optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=0.01))
    state = opt.init(params)
    frozen = emt.Frozen.of(tok.params, tok.config)

    @jax.jit
    def step(params, state, batch, rng):
        (_, m), g = jax.value_and_grad(lambda p: emt.loss_fn(p, batch, rng, {"model": mc}, frozen),
                                       has_aux=True)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, m

    rng = np.random.default_rng(seed)
    t0 = time.time()
    m = {}
    for i in range(steps):
        ix = rng.integers(0, len(tokens_sat), batch)
        params, state, m = step(params, state, {"sat_tokens": tokens_sat[ix], "map_tokens": tokens_map[ix],
                                                "coords": coords[ix]}, jax.random.key(i))
        if log and (i % 100 == 0 or i == steps - 1):
            log(f"step {i}: " + ", ".join(f"{k} {float(v):.3f}" for k, v in m.items() if k in ("ce", "acc_sat", "acc_map")))
    jax.block_until_ready(params)
    return Model(mc, params, tok), time.time() - t0, {k: float(v) for k, v in m.items()}


def lookup_baseline(train_sat_tokens, train_map_tokens, test_sat_tokens, vocab):
    """(N_test, L) map tokens read off the satellite tokens by the per-position table (module
    doc, `lookup`)."""
    n, length = train_sat_tokens.shape
    counts = np.zeros((length, vocab, vocab), np.int64)
    pos = np.broadcast_to(np.arange(length), (n, length))
    np.add.at(counts, (pos, train_sat_tokens, train_map_tokens), 1)
    seen = counts.sum(-1)  # (L, V): how often each satellite token occurred at each position
    best = counts.argmax(-1)
    fallback = counts.sum(1).argmax(-1)  # the position's majority map token
    table = np.where(seen > 0, best, fallback[:, None])
    return table[np.arange(length)[None], test_sat_tokens]


def evaluate(model, sat, mp, coords, train_map_tokens, baselines=True, train_sat_tokens=None,
             **sample_kw):
    """Held-out sat->map figures of the model and the baselines: token accuracy (overall and
    per scale) and patch-class accuracy of the decoded map (against the tokenizer's own
    reconstruction of the real map). The model translates greedily, without guidance or Key
    Point Force unless `sample_kw` says otherwise; baselines=False skips coords_only/majority;
    `train_sat_tokens` adds the `lookup` baseline."""
    tok = model.tokenizer
    true = tokens_of(tok, mp)
    kw = dict(top_k=1, top_p=0.0, guidance=(0.0, 0.0, 0.0), kpf_tau=None, decode=False)
    kw.update(sample_kw)
    maps, _ = S.translate(model, sat, "sat2map", jax.random.key(0), coords=coords, **kw)
    rows = {"model": np.asarray(scales.flatten_tokens(maps))}
    if baselines:
        (_, gen_map), _ = S.generate(model, coords, jax.random.key(0), top_k=1, top_p=0.0,
                                     guidance=(0.0, 0.0, 0.0), decode=False)
        rows["coords_only"] = np.asarray(scales.flatten_tokens(gen_map))
        rows.update(token_baselines(tok, train_sat_tokens, train_map_tokens, sat, len(true)))
    return score(tok, rows, true)


def token_baselines(tok, train_sat_tokens, train_map_tokens, sat, n):
    """{"majority": ..., "lookup": ...} (N, L) map tokens of the baselines that need no model
    (`lookup` only when `train_sat_tokens` is given)."""
    offsets = scales.scale_offsets(tuple(tok.config["patch_nums"]))
    out = {"majority": np.concatenate([
        np.full(e - b, np.bincount(train_map_tokens[:, b:e].ravel(), minlength=tok.vocab_size).argmax())
        for b, e in offsets])[None].repeat(n, 0)}
    if train_sat_tokens is not None:
        out["lookup"] = lookup_baseline(np.asarray(train_sat_tokens), np.asarray(train_map_tokens),
                                        tokens_of(tok, sat), tok.vocab_size)
    return out


def score(tok, rows, true):
    """acc_NAME (all tokens), acc_NAME_per_scale and class_acc_NAME (patch class of the decoded
    map against the tokenizer's reconstruction of the real one) for each {NAME: (N, L) tokens}."""
    pns = tuple(tok.config["patch_nums"])
    offsets = scales.scale_offsets(pns)
    true_cls = tok.patch_classes(scales.split_tokens(jnp.asarray(true), pns))
    out = {}
    for name, t in rows.items():
        out[f"acc_{name}"] = float((t == true).mean())
        out[f"acc_{name}_per_scale"] = [float((t[:, b:e] == true[:, b:e]).mean()) for b, e in offsets]
        out[f"class_acc_{name}"] = float((tok.patch_classes(scales.split_tokens(jnp.asarray(t), pns)) == true_cls).mean())
    return out


def prepare(n_train=2400, n_test=64, vocab=16, seed=0, geometry="small"):
    """Data and fitted tokenizer: (tok, (sat, map, coords) train, (sat, map, coords) test,
    (sat tokens, map tokens) train)."""
    image, pns = GEOMETRIES[geometry]
    sat, mp, coords, labels = make_data(n_train + n_test, seed=seed, image=image)
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    tok = fit_tokenizer(sat[tr], mp[tr], labels[tr], vocab=vocab, seed=seed, patch_nums=pns)
    return (tok, (sat[tr], mp[tr], coords[tr]), (sat[te], mp[te], coords[te]),
            (tokens_of(tok, sat[tr]), tokens_of(tok, mp[tr])))


def run(*, n_train=2400, n_test=64, steps=800, vocab=16, seed=0, log=None, sample_kw=None, **train_kw):
    """Data -> fitted tokenizer -> training -> held-out figures (dict, with timings)."""
    t0 = time.time()
    sat, mp, coords, labels = make_data(n_train + n_test, seed=seed)
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    tok = fit_tokenizer(sat[tr], mp[tr], labels[tr], vocab=vocab, seed=seed)
    ts, tm = tokens_of(tok, sat[tr]), tokens_of(tok, mp[tr])
    t_prep = time.time() - t0
    defaults = dict(within_scale="group", directed_rate=0.5, width=64, lr=3e-3)
    defaults.update(train_kw)
    model, t_train, last = train(tok, ts, tm, coords[tr], steps=steps, seed=seed, log=log, **defaults)
    out = evaluate(model, sat[te], mp[te], coords[te], tm, train_sat_tokens=ts, **(sample_kw or {}))
    out.update(seconds_prep=t_prep, seconds_train=t_train, seconds_total=time.time() - t0,
               train_last=last, settings=dict(n_train=n_train, n_test=n_test, steps=steps, vocab=vocab, **defaults))
    return out
