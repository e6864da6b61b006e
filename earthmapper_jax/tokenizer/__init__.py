"""VAR's multi-scale VQ-VAE tokenizer in JAX.

    tok = earthmapper_jax.tokenizer.load("vae_dir")     # earthmapper convert var-vae ... vae_dir
    idx = tok.encode(images)        # (B, S, S, 3) in [-1, 1] -> K int32 maps (B, pn, pn)
    rec = tok.decode(idx)           # -> (B, S, S, 3) in [-1, 1]; idx[:k] decodes the first k scales
    x = tok.teacher_forcing_inputs(idx)   # (B, L-1, z): the VAR transformer's inputs

Modules: resize (PyTorch-exact area/bicubic), vqvae (encoder/decoder), quantizer (multi-scale
residual VQ), model (the whole VQ-VAE), config, convert (VAR .pth), losses (training task).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.checkpoint import load_params, read_config, save_params
from earthmapper_jax.scales import seq_len
from earthmapper_jax.tokenizer.config import model_config
from earthmapper_jax.tokenizer.model import VQVAE

CHECKPOINT_KIND = "tokenizer"
# (config, method, static args) -> jitted function; see Tokenizer._call.
_JIT_CACHE = {}
# Images may stray this far outside [-1, 1] (rounding in the caller's normalisation).
RANGE_TOLERANCE = 1e-3


def init_params(cfg, rng):
    """Random tokenizer params for a (partial) config dict; works eagerly and under jit.

    Leaves are drawn directly from their shapes (`param_shapes`) by name: conv/dense kernels
    LeCun-normal (Flax's default), biases 0, GroupNorm scales 1, the codebook by
    `codebook_init_scale`. Running `model.init` instead would compile the whole forward pass
    just to learn shapes (about a minute on a small CPU, mostly threefry over ~200 tensors).
    """
    cfg = model_config(cfg)
    return _init_fn(_freeze(cfg))(rng)


def _freeze(cfg: dict) -> tuple:
    return tuple(sorted(cfg.items()))


@functools.lru_cache(maxsize=16)
def _init_fn(frozen_cfg: tuple):
    cfg = dict(frozen_cfg)
    flat, treedef = jax.tree_util.tree_flatten_with_path(_param_shapes(frozen_cfg))

    names = [path[-1].key for path, _ in flat]
    kernels = [i for i, n in enumerate(names) if n == "kernel"]
    sizes = [flat[i][1].size for i in kernels]

    def codebook(shape, key):
        e, v = cfg["codebook_init_scale"], shape[0]
        if e > 0:
            return e * jax.random.truncated_normal(key, -2.0, 2.0, shape)
        if e < 0:
            return jax.random.uniform(key, shape, minval=-abs(e) / v, maxval=abs(e) / v)
        return jax.random.normal(key, shape)  # torch nn.Embedding's default

    def draw(rng):
        # One draw for all kernels, sliced per tensor later, with an rbg key: XLA compiles a
        # random op per tensor (threefry especially) far slower than the init itself runs.
        fast = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
        k_kernels, k_codebook = jax.random.split(fast)
        # LeCun normal (Flax's default): truncated at 2 std, then std 1/sqrt(fan_in).
        z = jax.random.truncated_normal(k_kernels, -2.0, 2.0, (sum(sizes),)) / 0.87962566103423978
        cb = [i for i, n in enumerate(names) if n == "codebook"]
        return z, codebook(flat[cb[0]][1].shape, k_codebook)

    def assemble(z, cb, xp):
        leaves = [None] * len(flat)
        offset = 0
        for i, n in zip(kernels, sizes):
            shape = flat[i][1].shape
            fan_in = int(np.prod(shape[:-1]))
            leaves[i] = (z[offset:offset + n] / np.float32(np.sqrt(fan_in))).reshape(shape)
            offset += n
        for i, (path, s) in enumerate(flat):
            if names[i] == "codebook":
                leaves[i] = cb
            elif names[i] == "scale":
                leaves[i] = xp.ones(s.shape, s.dtype)
            elif leaves[i] is None:
                leaves[i] = xp.zeros(s.shape, s.dtype)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    draw_jit = jax.jit(draw)

    def init(rng):
        if _tracing():  # inside the caller's jit / eval_shape (e.g. a sharded init)
            return assemble(*draw(rng), jnp)
        # Eagerly: slice on the host, then one transfer (no per-tensor compiles).
        z, cb = jax.device_get(draw_jit(rng))
        return jax.device_put(assemble(z, cb, np))

    return init


def param_shapes(cfg):
    """Pytree of jax.ShapeDtypeStruct the params of `cfg` must have."""
    return _param_shapes(_freeze(model_config(cfg)))


def logically_partitioned(params, cfg):
    """`params` wrapped in the `nn.LogicallyPartitioned` boxes VQVAE declares (what
    `VQVAE.init` returns): the trainer reads each parameter's logical axis names from them."""
    boxes = _boxed_shapes(_freeze(model_config(cfg)))
    return jax.tree.map(lambda box, p: box.replace_boxed(p), boxes, params, is_leaf=_is_box)


def _is_box(x) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


@functools.lru_cache(maxsize=16)
def _boxed_shapes(frozen_cfg: tuple):
    cfg = dict(frozen_cfg)
    s = cfg["image_size"]
    return jax.eval_shape(
        lambda: VQVAE(cfg).init(jax.random.key(0), jnp.zeros((1, s, s, 3)))["params"]
    )


@functools.lru_cache(maxsize=16)
def _param_shapes(frozen_cfg: tuple):
    # `.value`, not nn.meta.unbox: under the trainer's mesh unbox would add sharding constraints
    return jax.tree.map(lambda box: box.value, _boxed_shapes(frozen_cfg), is_leaf=_is_box)


def check_params(params, cfg, where="params"):
    """CheckpointError naming the first missing/unexpected/mis-shaped parameter."""
    want = dict(jax.tree_util.tree_flatten_with_path(param_shapes(cfg))[0])
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    ks = jax.tree_util.keystr
    for path in sorted(want.keys() - got.keys(), key=ks):
        raise CheckpointError(f"{where}: parameter {ks(path)} is missing")
    for path in sorted(got.keys() - want.keys(), key=ks):
        raise CheckpointError(f"{where}: unexpected parameter {ks(path)}")
    for path, w in sorted(want.items(), key=lambda kv: ks(kv[0])):
        if tuple(np.shape(got[path])) != tuple(w.shape):
            raise CheckpointError(
                f"{where}: parameter {ks(path)} has shape {tuple(np.shape(got[path]))}, "
                f"expected {tuple(w.shape)} (another architecture?)"
            )


def _tracing() -> bool:
    """True inside jit / eval_shape tracing (where even constants' ops are staged)."""
    return isinstance(jnp.zeros(()) + 0, jax.core.Tracer)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class Tokenizer:
    """A VQ-VAE tokenizer: config dict + params, with jit-compiled (cached) operations.

    Token maps are lists of K int32 arrays (B, pn, pn), coarse to fine; images are NHWC float32
    in [-1, 1]; features are NHWC float32 (B, h, w, z), h = w = patch_nums[-1].
    """

    def __init__(self, params, config):
        self.config = model_config(config)
        self.params = params
        self.model = VQVAE(self.config)
        self.patch_nums = tuple(self.config["patch_nums"])
        self.image_size = self.config["image_size"]
        self.vocab_size = self.config["vocab_size"]
        self.z_channels = self.config["z_channels"]
        self.seq_len = seq_len(self.patch_nums)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_params(cls, params, config, check: bool = True) -> "Tokenizer":
        if check:
            check_params(params, config)
        return cls(params, config)

    @classmethod
    def init(cls, config, rng) -> "Tokenizer":
        """Random weights (tests, or the start of tokenizer training)."""
        return cls(init_params(config, rng), config)

    def save(self, directory, *, overwrite: bool = False, meta: dict | None = None):
        return save_params(directory, self.params, self.config, kind=CHECKPOINT_KIND,
                           meta=meta, overwrite=overwrite)

    def __repr__(self):
        c = self.config
        return (f"Tokenizer(image {c['image_size']}, ch {c['ch']}x{list(c['ch_mult'])}, "
                f"z {c['z_channels']}, V {c['vocab_size']}, patch_nums {list(self.patch_nums)})")

    # -- jit cache ----------------------------------------------------------------------------

    def _call(self, method: str, *args, static=None, **arrays):
        """model.<method>(*args, **arrays, **static), jitted once per (config, method, static)
        and shared by every Tokenizer of the same config (params are an argument)."""
        static = dict(static or {})
        key = (_freeze(self.config), method, tuple(sorted(static.items())))
        fn = _JIT_CACHE.get(key)
        if fn is None:
            model, meth = self.model, getattr(VQVAE, method)

            def run(params, *a, **kw):
                return model.apply({"params": params}, *a, method=meth, **kw, **static)

            fn = _JIT_CACHE[key] = jax.jit(run)
        return fn(self.params, *args, **arrays)

    # -- checks -------------------------------------------------------------------------------

    def check_images(self, images):
        """InputError unless `images` is (B, S, S, 3), S = image_size, values in [-1, 1]."""
        shape = tuple(np.shape(images))
        s = self.image_size
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"images must be (batch, {s}, {s}, 3) NHWC RGB, got shape {shape}")
        if shape[1:3] != (s, s):
            raise InputError(
                f"image size {shape[1]}x{shape[2]} does not match the tokenizer's {s}x{s}")
        if _is_concrete(images):
            a = np.asarray(images)
            if not np.isfinite(a).all():
                raise InputError("images contain NaN or Inf values")
            lo, hi = float(a.min()), float(a.max())
            if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
                raise InputError(
                    f"image values span [{lo:.4g}, {hi:.4g}], expected [-1, 1] "
                    "(scale uint8 pixels with x / 127.5 - 1)")
        return jnp.asarray(images, jnp.float32)

    def check_fhat(self, f_hat):
        """InputError unless `f_hat` is (B, h, h, z), h = patch_nums[-1]."""
        h, z = self.patch_nums[-1], self.z_channels
        shape = tuple(np.shape(f_hat))
        if len(shape) != 4 or shape[1:] != (h, h, z):
            raise InputError(f"f_hat has shape {shape}, expected (batch, {h}, {h}, {z})")
        return jnp.asarray(f_hat, jnp.float32)

    def check_indices(self, indices, need_all: bool = False):
        """InputError unless `indices` are the first k (all K if need_all) token maps."""
        if not isinstance(indices, (list, tuple)) or not indices:
            raise InputError(f"token maps must be a non-empty list of up to {len(self.patch_nums)} "
                             "int arrays (B, pn, pn)")
        k = len(self.patch_nums)
        if len(indices) > k or (need_all and len(indices) != k):
            raise InputError(f"got {len(indices)} token maps, expected {k if need_all else f'1..{k}'}"
                             f" (patch_nums {list(self.patch_nums)})")
        b = np.shape(indices[0])[0] if np.ndim(indices[0]) else None
        out = []
        for si, (idx, pn) in enumerate(zip(indices, self.patch_nums)):
            shape = tuple(np.shape(idx))
            if shape != (b, pn, pn):
                raise InputError(f"token map {si} has shape {shape}, expected ({b}, {pn}, {pn})")
            if _is_concrete(idx):
                a = np.asarray(idx)
                if not np.issubdtype(a.dtype, np.integer):
                    raise InputError(f"token map {si} has dtype {a.dtype}, expected integers")
                if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
                    raise InputError(f"token map {si} has ids in [{a.min()}, {a.max()}], "
                                     f"expected [0, {self.vocab_size - 1}]")
            out.append(jnp.asarray(idx, jnp.int32))
        return out

    # -- operations ---------------------------------------------------------------------------

    def encode(self, images):
        """(B, S, S, 3) images in [-1, 1] -> list of K int32 token maps (B, pn, pn)."""
        return self._call("encode", self.check_images(images))

    def decode(self, indices):
        """First k <= K token maps -> images (B, S, S, 3) clipped to [-1, 1] (VAR's idxBl_to_img)."""
        return self._call("decode", self.check_indices(indices))

    def fhat(self, indices):
        """First k <= K token maps -> f_hat (B, h, w, z) float32 (the decoder's input)."""
        return self._call("fhat", self.check_indices(indices))

    def decode_fhat(self, f_hat):
        """f_hat (B, h, w, z) -> images clipped to [-1, 1] (VAR's fhat_to_img)."""
        return self._call("decode_fhat", self.check_fhat(f_hat))

    def encode_features(self, images):
        """Images -> unquantized features f (B, h, w, z) float32."""
        return self._call("encode_features", self.check_images(images))

    def reconstruct(self, images, num_scales: int | None = None):
        """Images -> reconstruction from the first `num_scales` scales (default all), clipped."""
        k = len(self.patch_nums)
        if num_scales is not None and not 1 <= num_scales <= k:
            raise InputError(f"num_scales must be in 1..{k}, got {num_scales}")
        return self._call("reconstruct", self.check_images(images), static={"num_scales": num_scales})

    def embed(self, idx):
        """Codebook vectors of one token map: (B, h, w) int -> (B, h, w, z) float32."""
        return self._call("embed", jnp.asarray(idx, jnp.int32))

    def teacher_forcing_inputs(self, indices):
        """All K token maps -> (B, L - 1, z) VAR transformer inputs (VAR's idxBl_to_var_input)."""
        return self._call("teacher_forcing_inputs", self.check_indices(indices, need_all=True))

    def next_autoregressive_input(self, si: int, num_scales: int, f_hat, h):
        """VAR's get_next_autoregressive_input(si, SN, f_hat, h) with h (B, pn, pn, z).

        Returns (f_hat, next input (B, pn_{si+1}, pn_{si+1}, z), or f_hat after the last scale).
        """
        return self._call("next_autoregressive_input", f_hat=jnp.asarray(f_hat, jnp.float32),
                          h=jnp.asarray(h, jnp.float32),
                          static={"si": int(si), "num_scales": int(num_scales)})

    def apply(self, method: str, *args, **kwargs):
        """Un-jitted model.<method> for use inside the caller's own jit (no input checks)."""
        return self.model.apply({"params": self.params}, *args, method=getattr(VQVAE, method),
                                **kwargs)


def load(directory) -> Tokenizer:
    """Loads a tokenizer directory (written by `earthmapper convert var-vae` or training)."""
    doc = read_config(directory, expect_kind=CHECKPOINT_KIND)
    try:
        cfg = model_config(doc["config"])
    except InputError as e:
        raise CheckpointError(f"{directory}: bad tokenizer config.json ({e})") from None
    params, _ = load_params(directory, expect_kind=CHECKPOINT_KIND, target=param_shapes(cfg))
    return Tokenizer(params, cfg)
