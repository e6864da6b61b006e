"""Token sampling helpers: VAR's top-k / top-p filtering and sampling with a JAX PRNG key.

Public API (stable; every sampler of the package uses these):

    filter_top_k_top_p(logits (..., V), top_k=0, top_p=0.0) -> (..., V) logits with the removed
        tokens at -inf. Exactly VAR's sample_with_top_k_top_p_ filter:
          top-k: tokens whose logit is < the k-th largest are removed (ties with the k-th are
                 kept, so more than k may survive);
          top-p: sort ascending, remove tokens whose cumulative softmax probability is
                 <= 1 - top_p, but never the most likely token.
        top_k <= 0 / top_p <= 0 disable a filter. This is the full-vocabulary reference (sorts V).

    candidates(logits, top_k=0, top_p=0.0, tie_margin=16) -> (cand_logits (..., k'), cand_ids)
        The same filter computed on the top k' = top_k + tie_margin logits only (lax.top_k, no
        full sort): identical to filter_top_k_top_p unless more than tie_margin tokens tie with
        the k-th logit. Removed candidates are -inf. top_k <= 0 -> k' = V.

    sample_tokens(rng, logits, top_k=0, top_p=0.0, temperature=1.0) -> int32 (...) token ids
        logits / temperature, then the filter, then one categorical draw per position (VAR's
        torch.multinomial on the softmax; a different random stream, the same distribution).
        top_k=1 is greedy (deterministic).

    gumbel_softmax(rng, logits, tau) -> probabilities softmax((logits + Gumbel) / tau) (VAR's
        more_smooth path, hard=False).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = -jnp.inf


def _top_p_mask_sorted_desc(vals_desc, top_p):
    """Removal mask for values sorted descending, VAR's rule (which is stated on ascending order)."""
    asc = vals_desc[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(asc, axis=-1), axis=-1)
    remove = cum <= (1.0 - top_p)
    remove = remove.at[..., -1].set(False)  # the most likely token always stays
    return remove[..., ::-1]


def filter_top_k_top_p(logits, top_k: int = 0, top_p=0.0):
    """Full-vocabulary VAR filter (see module doc)."""
    logits = logits.astype(jnp.float32)
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if _enabled(top_p):
        order = jnp.argsort(-logits, axis=-1)  # descending
        vals = jnp.take_along_axis(logits, order, axis=-1)
        remove_sorted = _top_p_mask_sorted_desc(vals, top_p)
        remove = jnp.zeros_like(remove_sorted)
        remove = jnp.put_along_axis(remove, order, remove_sorted, axis=-1, inplace=False)
        apply = jnp.asarray(top_p) > 0
        logits = jnp.where(remove & apply, NEG_INF, logits)
    return logits


def _enabled(top_p) -> bool:
    """top_p may be traced: then the filter is built and switched by value."""
    return not (isinstance(top_p, (int, float)) and top_p <= 0)


def candidates(logits, top_k: int = 0, top_p=0.0, tie_margin: int = 16):
    """Filtered top candidates (see module doc)."""
    logits = logits.astype(jnp.float32)
    V = logits.shape[-1]
    n = V if top_k <= 0 else min(V, top_k + tie_margin)
    vals, ids = lax.top_k(logits, n)  # descending
    if 0 < top_k < V:
        kth = vals[..., top_k - 1 : top_k]
        vals = jnp.where(vals < kth, NEG_INF, vals)
    if _enabled(top_p):
        remove = _top_p_mask_sorted_desc(vals, top_p)
        vals = jnp.where(remove & (jnp.asarray(top_p) > 0), NEG_INF, vals)
    return vals, ids.astype(jnp.int32)


def sample_tokens(rng, logits, top_k: int = 0, top_p=0.0, temperature=1.0):
    """Filtered categorical sample of token ids, int32 with logits' leading shape."""
    logits = logits.astype(jnp.float32) / temperature
    vals, ids = candidates(logits, top_k, top_p)
    pos = jax.random.categorical(rng, vals, axis=-1)
    return jnp.take_along_axis(ids, pos[..., None], axis=-1)[..., 0]


def scatter_candidates(vals, ids, vocab_size: int):
    """Candidate logits back into a (..., V) array with -inf elsewhere."""
    full = jnp.full(vals.shape[:-1] + (vocab_size,), NEG_INF, vals.dtype)
    return jnp.put_along_axis(full, ids, vals, axis=-1, inplace=False)


def gumbel_softmax(rng, logits, tau):
    g = jax.random.gumbel(rng, logits.shape, jnp.float32)
    return jax.nn.softmax((logits.astype(jnp.float32) + g) / tau, axis=-1)
