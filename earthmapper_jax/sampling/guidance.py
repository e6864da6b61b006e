"""Guidance for next-scale sampling: pure functions of logits (see docs/guidance.md).

All functions work on fp32 logits (..., V) and broadcast per-sample strengths of shape (B,)
over the remaining axes. None of them touches the host: they run inside the jitted sampler.

- VAR's CFG with a linear ramp:       l = (1 + t) l_c - t l_u,  t = cfg · si/(K-1)
- multi-term CFG ("guidance triples" (t1, t2, t3)), in one of two forms (`term_weights`):
    "nested" (default, ControlVAR's chain: coordinates take its class slot, the condition
    image its pixel-condition slot; EarthMapper has no condition-type token, so the middle
    level equals `nogeo` and t2 cancels):
      l = (1 + s·t1) l_full + s·(t3 - t1) l_nogeo - s·t3 l_uncond
    equal triples (t, t, t) are exactly plain CFG of strength t;
    "independent" (one term per condition, summed):
      l = l_full + s · [ t1 (l_full - l_nogeo) + t2 (l_full - l_nocond) + t3 (l_full - l_uncond) ]
  Both are evaluated by `multi_term_cfg` on per-branch weights against l_full.
  branches: full = coordinates + condition image, nogeo = null coordinates + condition,
  nocond = coordinates + null condition, uncond = neither. A branch identical to full (no
  coordinates: nogeo; no condition image: nocond) is dropped, two identical branches (no
  coordinates: nocond = uncond; no condition image: nogeo = uncond) are computed once, and a
  zero weight drops its branch.
- Complexity Guidance (paper Eq. 21-22): s = γ · α(r) · β(C), α(r) = r^p with r = si/(K-1),
  β(C) = β_min + (1 - β_min) · C, C = mean normalised entropy H(p)/log V of the predicted
  distribution at this scale, per sample. Without complexity guidance s = α(r) (VAR's ramp).
- Key Point Force (paper Eq. 16-19): positions whose condition token index q_C satisfies
  q_C/(V-1) > τ get q = clip(q_G + q_C, 0, V-1).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp


def ramp(si: int, num_scales: int) -> float:
    """α(r) of VAR: r = si/(K-1) (0 at the first scale, 1 at the last); static."""
    return si / max(num_scales - 1, 1)


def _per_sample(s, like):
    """Broadcasts a scalar or (B,) strength against logits (B, ..., V)."""
    s = jnp.asarray(s, jnp.float32)
    return s.reshape(s.shape + (1,) * (like.ndim - s.ndim)) if s.ndim else s


def var_cfg(cond_logits, uncond_logits, cfg: float, ratio):
    """VAR's classifier-free guidance: (1 + t) l_c - t l_u with t = cfg · ratio."""
    t = _per_sample(jnp.asarray(cfg, jnp.float32) * ratio, cond_logits)
    return (1.0 + t) * cond_logits - t * uncond_logits


def multi_term_cfg(full, weights, strength=1.0, *, nogeo=None, nocond=None, uncond=None):
    """Multi-term CFG (see module doc). weights = (w_geo, w_cond, w_both), floats or a traced
    (3,) array; a term whose branch is None is skipped (its weight must then be 0).
    strength: scalar or (B,) (γ·α·β from `complexity_strength`)."""
    delta = jnp.zeros_like(full)
    for i, (branch, name) in enumerate(((nogeo, "nogeo"), (nocond, "nocond"), (uncond, "uncond"))):
        w = weights[i]
        if branch is None:
            if not isinstance(w, jax.core.Tracer) and float(w) != 0.0:
                raise ValueError(f"guidance weight {float(w)} needs the {name!r} branch logits")
            continue
        delta = delta + w * (full - branch)
    return full + _per_sample(strength, full) * delta


GUIDANCE_FORMS = ("nested", "independent")


def term_weights(triple: Sequence[float], form: str, geo_given: bool, has_condition: bool) -> tuple:
    """The per-branch weights (w_nogeo, w_nocond, w_uncond) against l_full of a guidance triple,
    on the host (static: they decide which branches are computed).

    Branches that coincide are merged: without coordinates nogeo = full (its term vanishes) and
    nocond = uncond; without a condition image nocond = full and nogeo = uncond. In the nested
    form the merged weights add (the exact linear combination, so (t, t, t) stays plain CFG t);
    in the independent form a merged pair keeps the larger weight (one term, not doubled)."""
    t1, t2, t3 = (float(w) for w in triple)
    if form == "nested":
        w = {"nogeo": t1 - t3, "nocond": 0.0, "uncond": t3}
    elif form == "independent":
        w = {"nogeo": t1, "nocond": t2, "uncond": t3}
    else:  # validated where the option enters (sampler _options)
        raise AssertionError(form)
    merge = (lambda a, b: a + b) if form == "nested" else max
    if not geo_given:
        w["nogeo"] = 0.0
        if has_condition:
            w["uncond"], w["nocond"] = merge(w["uncond"], w["nocond"]), 0.0
    if not has_condition:
        w["nocond"] = 0.0
        if geo_given:
            w["uncond"], w["nogeo"] = merge(w["uncond"], w["nogeo"]), 0.0
        else:
            w["uncond"] = 0.0  # every branch is the full one
    return w["nogeo"], w["nocond"], w["uncond"]


def needed_branches(weights: Sequence[float], has_condition: bool) -> tuple:
    """The extra CFG branches a weight triple needs, in a fixed order (static)."""
    w_geo, w_cond, w_both = (float(w) for w in weights)
    out = []
    if w_geo != 0.0:
        out.append("nogeo")
    if w_cond != 0.0 and has_condition:
        out.append("nocond")
    if w_both != 0.0:
        out.append("uncond")
    return tuple(out)


def normalized_entropy(logits, axis: int = -1):
    """H(softmax(logits)) / log V in [0, 1], over `axis`."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=axis)
    h = -jnp.sum(jnp.exp(logp) * logp, axis=axis)
    return h / math.log(logits.shape[axis])


def complexity(logits, valid=None):
    """C per sample: mean normalised entropy over the positions of (B, n, V) logits, (B,).
    valid: optional (B, n) bool of the positions that count (e.g. the masked region)."""
    h = normalized_entropy(logits)
    if valid is None:
        return jnp.mean(h, axis=-1)
    valid = valid.astype(jnp.float32)
    return jnp.sum(h * valid, -1) / jnp.maximum(jnp.sum(valid, -1), 1.0)


def alpha(ratio, power: float = 1.0):
    """α(r) = r^power, r in [0, 1]: low at coarse scales, rising with resolution."""
    return jnp.asarray(ratio, jnp.float32) ** power


def beta(c, beta_min: float = 0.5):
    """β(C) = β_min + (1 - β_min)·C: low for simple (peaked) predictions, 1 at maximal entropy."""
    return beta_min + (1.0 - beta_min) * jnp.asarray(c, jnp.float32)


def complexity_strength(ratio, c=None, *, gamma: float = 1.0, alpha_power: float = 1.0,
                        beta_min: float = 0.5):
    """s = γ · α(r) · β(C); with c=None, β ≡ 1 (plain ramp)."""
    s = gamma * alpha(ratio, alpha_power)
    return s if c is None else s * beta(c, beta_min)


def key_point_force(sampled, condition, vocab_size: int, tau: Optional[float]):
    """Paper Eq. 16-19 on token maps of one scale (same shape, int): where the normalised
    condition index exceeds τ, the generated index becomes clip(q_G + q_C, 0, V-1)."""
    if tau is None:
        return sampled
    key = condition.astype(jnp.float32) / (vocab_size - 1) > tau
    forced = jnp.clip(sampled + condition, 0, vocab_size - 1).astype(sampled.dtype)
    return jnp.where(key, forced, sampled)
