"""A minutes-long CPU learning check of EarthMapper on the procedural synthetic city.

Used by tests/test_earthmapper_learning.py (small settings) and benchmarks/earthmapper_learning.py
(larger settings, layout / guidance comparisons). Nothing here is needed to train or sample.

Tokenizer. Training a VQ-VAE takes far longer than the check may, and a random VQ-VAE's tokens
carry almost no shared meaning between a satellite tile and its map (measured: knowing the
satellite token at a position predicts the map token there barely better than the majority
token). So the check uses a *fitted* tokenizer that keeps the package's multi-scale residual
quantizer (teacher-forcing inputs, next-scale inputs, token embedding are the real code paths):
  features = PCA (fitted on both modalities) of each p×p pixel patch -> (S/p, S/p, z), and
  codebook = k-means of the per-scale residuals (a few Lloyd rounds through the residual loop),
  Phi off (quant_resi = 0). Its decoder maps f_hat back to pixels with the PCA inverse, so
  translations can also be scored in pixels.

Baselines for sat->map on held-out tiles (greedy decoding, no guidance):
  majority    the most frequent training map token of each scale, everywhere;
  coords_only the same model generating the pair from the coordinates alone (the map half of
              joint generation): what the model knows without the satellite image.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earthmapper_jax import synthetic
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.loading import Model
from earthmapper_jax.sampling import earthmapper_sampler as S
from earthmapper_jax.tokenizer.model import VQVAE
from earthmapper_jax.tokenizer.resize import area_resize, bicubic_resize

IMAGE = 48
PATCH = 8
PATCH_NUMS = (1, 2, 3, 4, 6)


def _patches(x, p=PATCH):
    B, H, W, _ = x.shape
    return x.reshape(B, H // p, p, W // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(B, H // p, W // p, p * p * 3)


class PCATokenizer(tok_lib.Tokenizer):
    """A Tokenizer whose encoder is a fixed PCA of pixel patches (see module doc)."""

    def __init__(self, params, config, mean, basis):
        super().__init__(params, config)
        self.mean, self.basis = mean.astype(np.float32), basis.astype(np.float32)

    def features(self, images):
        return jnp.asarray(((_patches(np.asarray(images, np.float32)) - self.mean) @ self.basis))

    def encode(self, images):
        f = self.features(self.check_images(images))
        return self.model.apply({"params": self.params}, f,
                                method=lambda m, f: m.quantize.encode_to_indices(f))

    def to_pixels(self, f_hat):
        """PCA inverse of f_hat (B, g, g, z) -> images (B, S, S, 3) in [-1, 1]."""
        B, g, _, _ = f_hat.shape
        x = np.asarray(f_hat) @ self.basis.T + self.mean
        x = x.reshape(B, g, g, PATCH, PATCH, 3).transpose(0, 1, 3, 2, 4, 5).reshape(B, g * PATCH, g * PATCH, 3)
        return np.clip(x, -1, 1)


def _kmeans(x, k, rng, iters=10):
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
        a = d.argmin(1)
        for j in range(k):
            sel = a == j
            c[j] = x[sel].mean(0) if sel.any() else x[rng.integers(len(x))]
    return c.astype(np.float32)


def fit_tokenizer(sat, mp, vocab=64, z=8, rounds=3, seed=0) -> PCATokenizer:
    """PCA + residual k-means tokenizer fitted on [-1, 1] satellite and map tiles."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([_patches(sat), _patches(mp)])
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(0)
    basis = np.linalg.svd(flat - mean, full_matrices=False)[2][:z].T
    f = jnp.asarray((x - mean) @ basis, jnp.float32)
    g = f.shape[1]
    codebook = _kmeans(np.concatenate([np.asarray(area_resize(f, pn)).reshape(-1, z) for pn in PATCH_NUMS]), vocab, rng)
    for _ in range(rounds):  # Lloyd rounds through the residual loop: codes for every scale
        rest, res = f, []
        for pn in PATCH_NUMS:
            zz = area_resize(rest, pn) if pn != g else rest
            d = jnp.sum(jnp.square(zz[..., None, :] - codebook), -1)
            h = jnp.asarray(codebook)[jnp.argmin(d, -1)]
            res.append(np.asarray(zz).reshape(-1, z))
            rest = rest - (bicubic_resize(h, g) if pn != g else h)
        codebook = _kmeans(np.concatenate(res), vocab, rng)
    cfg = dict(ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, using_sa=False, using_mid_sa=False,
               vocab_size=vocab, z_channels=z, image_size=IMAGE, patch_nums=PATCH_NUMS, quant_resi=0.0)
    params = tok_lib.init_params(cfg, jax.random.key(seed))
    params = jax.tree.map(lambda a: a, dict(params))
    params["quantize"] = dict(params["quantize"], codebook=jnp.asarray(codebook))
    return PCATokenizer(params, cfg, mean, basis)


def tokens_of(tok, images, batch=128):
    return np.concatenate([np.asarray(em.flatten_tokens(tok.encode(images[i:i + batch])))
                           for i in range(0, len(images), batch)])


def make_data(n_train, n_test, seed=0):
    b = synthetic.make_batch(n_train + n_test, IMAGE, seed=seed)
    return b["satellite"], b["map"], b["coords"]


def train(tok, tokens_sat, tokens_map, coords, *, steps, batch=32, lr=2e-3, depth=2, width=128,
          within_scale="group", init_adaln_gamma=1e-5, seed=0, log=None):
    """Trains a tiny EarthMapper on pre-tokenised pairs; returns (Model, seconds, last metrics)."""
    import tempfile

    tdir = tempfile.mkdtemp(prefix="em-learning-tok-")
    mc = em.model_config("tiny", patch_nums=PATCH_NUMS, vocab_size=tok.vocab_size, cvae=tok.z_channels,
                         depth=depth, embed_dim=width, num_heads=max(1, width // 64), si_layer=0,
                         si_weight=0.0, drop_path_rate=0.0, within_scale=within_scale, tokenizer_dir=tdir,
                         init_adaln_gamma=init_adaln_gamma)
    em._tokenizer_module_at.cache_clear()
    tok.save(f"{tdir}/t", overwrite=True)
    mc.tokenizer_dir = f"{tdir}/t"
    params = em.init_params(mc, jax.random.key(seed))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 20)
    opt = optax.chain(optax.clip_by_global_norm(2.0), optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=0.01))
    state = opt.init(params)
    frozen = {"tokenizer": tok.params, "dinov2": None}

    @jax.jit
    def step(params, state, batch, rng):
        (_, m), g = jax.value_and_grad(lambda p: em.loss_fn(p, batch, rng, {"model": mc}, frozen),
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


def evaluate(model, sat, mp, coords, train_map_tokens, **sample_kw):
    """Held-out sat->map figures: token accuracy and pixel RMSE of the model and baselines."""
    tok = model.tokenizer
    pns = tuple(model.config.patch_nums)
    true = tokens_of(tok, mp)
    kw = dict(top_k=1, top_p=0.0, guidance=(0.0, 0.0, 0.0), decode=False)
    kw.update(sample_kw)
    maps, _ = S.translate(model, sat, "sat2map", jax.random.key(0), coords=coords, **kw)
    pred = np.asarray(em.flatten_tokens(maps))
    (_, gen_map), _ = S.generate(model, coords, jax.random.key(0), top_k=1, top_p=0.0,
                                 guidance=(0.0, 0.0, 0.0), decode=False)
    coords_only = np.asarray(em.flatten_tokens(gen_map))
    off = np.cumsum([0] + [p * p for p in pns])
    majority = np.concatenate([
        np.full(p * p, np.bincount(train_map_tokens[:, off[k]:off[k + 1]].ravel(), minlength=tok.vocab_size).argmax())
        for k, p in enumerate(pns)])[None].repeat(len(true), 0)

    true_cls = map_classes(mp)

    def decoded(tokens):
        return tok.to_pixels(tok.fhat(em.split_tokens(jnp.asarray(tokens), pns)))

    out = {}
    for name, t in (("model", pred), ("coords_only", coords_only), ("majority", majority), ("tokenizer", true)):
        img = decoded(t)
        out[f"acc_{name}"] = float((t == true).mean())
        out[f"acc_{name}_per_scale"] = [float((t[:, off[k]:off[k + 1]] == true[:, off[k]:off[k + 1]]).mean())
                                        for k in range(len(pns))]
        out[f"rmse_{name}"] = float(np.sqrt(np.mean(np.square((img - mp) / 2.0))))
        out[f"miou_{name}"] = mean_iou(map_classes(img), true_cls)
    return out


MAP_CLASSES = np.array([synthetic.MAP_BACKGROUND, synthetic.MAP_PARK, synthetic.MAP_WATER,
                        synthetic.MAP_BUILDING, synthetic.MAP_MINOR_ROAD, synthetic.MAP_MAJOR_ROAD],
                       np.float32) / 127.5 - 1.0


def map_classes(images):
    """Per-pixel nearest map-palette class (background, park, water, building, minor, major)."""
    d = np.square(np.asarray(images)[..., None, :] - MAP_CLASSES).sum(-1)
    return d.argmin(-1)


def mean_iou(pred, true) -> float:
    """Mean intersection-over-union over the classes present in `true`."""
    ious = []
    for c in np.unique(true):
        inter = np.sum((pred == c) & (true == c))
        union = np.sum((pred == c) | (true == c))
        ious.append(inter / union)
    return float(np.mean(ious))
