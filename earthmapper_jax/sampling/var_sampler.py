"""Class-conditional sampling in VAR mode: VAR's autoregressive_infer_cfg as one jit per setting.

Public API:

    generate_class(model, labels, rng, cfg=1.5, top_k=900, top_p=0.96, temperature=1.0,
                   more_smooth=False, decode=True) -> (token_maps, images)
        model: a VAR-mode `Model` (earthmapper_jax.load). labels: (B,) ints in [0, num_classes]
        (num_classes = unconditional) or one int with `batch=` (negative = unconditional).
        rng: a jax PRNG key. Returns token_maps, a list of K int32 (B, pn, pn), and images
        (B, H, W, 3) float32 in [-1, 1] (VAR's decoder output, clipped; None if decode=False).

    What happens (VAR's semantics):
      * 2B rows when cfg != 0: conditional labels first, the null class second; both halves see
        the same sampled tokens. Logits (1 + t) * cond - t * uncond with t = cfg * si / (K - 1).
      * per scale: query only that scale's tokens against a fixed-size KV cache (2B, L, H, D)
        per layer, written in place at the scale's static offset; fp32 logits; filter (top-k then top-p, VAR's
        rule, see filtering.py); one categorical draw per token; codebook lookup (or, with
        more_smooth, VAR's Gumbel-softmax mix of code vectors, tau = max(0.27 (1 - 0.95 r), 0.005)
        on logits * (1 + r)); f_hat update and next input through the tokenizer.
      * the K scales are unrolled in one jax.jit (static shapes and offsets); nothing leaves the
        device inside the loop. One compilation per (batch, top_k, more_smooth, cfg != 0,
        decode); cfg, top_p and temperature are traced values.
      * the compute dtype and the attention kernel come from the model's config (dtype,
        sample_attention); `model.with_config(dtype="bfloat16")` gives the bf16 sampler.

    sample_var_tokens(module, tok_module, params, tok_params, labels, rng, cfg, top_p,
                      temperature, *, top_k, more_smooth, guided, decode, return_logits=False)
        the traced function itself (for benchmarks and tests; return_logits adds the per-scale
        guided logits).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.blocks import init_caches
from earthmapper_jax.models.var_mode import check_labels, tokenizer_parts
from earthmapper_jax.sampling.filtering import (
    candidates,
    gumbel_softmax,
    sample_tokens,
    scatter_candidates,
)
from earthmapper_jax.scales import scale_offsets


def fast_key(rng):
    """An 'rbg' key derived from any key: rbg's split/bits are a few ops, threefry's a large
    unrolled hash (seconds of XLA compile per call site on CPU, slower bits on accelerators)."""
    return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")


def sample_var_tokens(module, tok_module, params, tok_params, labels, rng, cfg, top_p, temperature,
                      *, top_k: int, more_smooth: bool, guided: bool, decode: bool,
                      return_logits: bool = False):
    """The traced sampling program (see module doc)."""
    VAR = var_lib.VAR
    p, tp = {"params": params}, {"params": tok_params}
    rng = fast_key(rng)
    B = labels.shape[0]
    K = len(module.patch_nums)
    offsets = scale_offsets(module.patch_nums)
    L = offsets[-1][1]
    rows = 2 * B if guided else B
    if guided:
        labels = jnp.concatenate([labels, jnp.full((B,), module.num_classes, labels.dtype)])

    cond = module.apply(p, labels, method=VAR.class_embedding)
    x = module.apply(p, cond, method=VAR.first_tokens)
    head_dim = module.embed_dim // module.num_heads
    caches = init_caches(module.depth, rows, L, module.num_heads, head_dim, module.dtype,
                         stacked=module.scan_layers)
    full = module.patch_nums[-1]
    f_hat = jnp.zeros((B, full, full, module.cvae), jnp.float32)
    codebook = None
    token_maps, all_logits = [], []
    for si, pn in enumerate(module.patch_nums):
        ratio = si / (K - 1) if K > 1 else 0.0
        begin, _ = offsets[si]
        h, caches, _ = module.apply(p, x, cond, None, caches, begin, method=VAR.transformer)
        logits = module.apply(p, h, cond, method=VAR.logits_from_hidden)  # (rows, pn*pn, V)
        if guided:
            t = cfg * ratio
            logits = (1.0 + t) * logits[:B] - t * logits[B:]
        if return_logits:
            all_logits.append(logits)
        rng, k_sample, k_gumbel = jax.random.split(rng, 3)
        idx = sample_tokens(k_sample, logits, top_k, top_p, temperature)  # (B, pn*pn)
        token_maps.append(idx.reshape(B, pn, pn))
        if more_smooth:
            if codebook is None:
                codebook = tok_module.apply(
                    tp, jnp.arange(module.vocab_size, dtype=jnp.int32), method="embed")
            vals, ids = candidates(logits / temperature, top_k, top_p)
            filtered = scatter_candidates(vals, ids, module.vocab_size)
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)
            probs = gumbel_softmax(k_gumbel, filtered * (1 + ratio), tau)
            emb = (probs @ codebook).reshape(B, pn, pn, module.cvae)
        else:
            emb = tok_module.apply(tp, idx.reshape(B, pn, pn), method="embed")
        f_hat, nxt = tok_module.apply(tp, si, K, f_hat, emb, method="next_autoregressive_input")
        if si != K - 1:
            pn_next = module.patch_nums[si + 1]
            x = module.apply(p, nxt.reshape(B, pn_next * pn_next, module.cvae), si + 1,
                             method=VAR.scale_tokens)
            if guided:
                x = jnp.concatenate([x, x], axis=0)
    images = tok_module.apply(tp, f_hat, method="decode_fhat") if decode else None
    if return_logits:
        return token_maps, images, all_logits
    return token_maps, images


def _sampling_module(model):
    c = model.config
    return var_lib.build(c, attention=c.get("sample_attention", c.attention))


def generate_class(model, labels, rng, cfg=1.5, top_k=900, top_p=0.96, temperature=1.0,
                   more_smooth=False, decode=True, batch=None):
    """Class-conditional samples (see module doc): (list of K (B, pn, pn) int32, images or None)."""
    if model.mode != "var":
        raise InputError(f"generate_class needs a VAR-mode model, this one is {model.mode!r}")
    c = model.config
    labels = check_labels(labels, c.num_classes, batch=batch)
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0:
        raise InputError(f"top_k must be an integer >= 0, got {top_k!r}")
    if not 0.0 <= float(top_p) <= 1.0:
        raise InputError(f"top_p must lie in [0, 1], got {top_p!r}")
    if not float(temperature) > 0.0:
        raise InputError(f"temperature must be > 0, got {temperature!r}")
    top_k, guided = int(top_k), float(cfg) != 0.0
    key = ("generate_class", int(labels.shape[0]), top_k, bool(more_smooth), guided, bool(decode))

    def make():
        tok_module, _ = tokenizer_parts(model.tokenizer)
        fn = functools.partial(
            sample_var_tokens, _sampling_module(model), tok_module, top_k=top_k,
            more_smooth=bool(more_smooth), guided=guided, decode=bool(decode),
        )
        return jax.jit(fn)

    fn = model.cached_jit(key, make)
    _, tok_params = tokenizer_parts(model.tokenizer)
    return fn(model.params, tok_params, labels, rng, jnp.float32(cfg), jnp.float32(top_p),
              jnp.float32(temperature))
