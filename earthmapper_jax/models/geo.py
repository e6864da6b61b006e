"""Geographic conditioning c_g = MLP(SinEmbed(lat) ⊕ SinEmbed(lon)) (EarthMapper Eq. 8).

Coordinates are (B, 2) float arrays of (latitude, longitude) in degrees, WGS84 (EPSG:4326), in
that order; a row of NaN means "no coordinates" (the New York set has none) and selects the
learned null embedding, which also serves classifier-free guidance.

SinEmbed (the paper gives no frequencies): an angle θ in degrees becomes
    [sin(2π f_i θ/360), cos(2π f_i θ/360)]  for f_i = 2^i, i = 0 .. num_freqs-1,
i.e. integer numbers of cycles around the full circle. Integer frequencies make the longitude
code exactly periodic (-180° and +180° give the same vector: the "non-Euclidean" wrap the paper
mentions); the highest frequency 2^15 has a period of 360°/32768 ≈ 0.011° ≈ 1.2 km, about five
256-px tiles at zoom 19, so neighbouring tiles get distinct codes and whole cities smooth ones.
The phase is computed as frac(f·θ/360) so float32 keeps ~1e-3 cycle accuracy at f = 2^15.

The MLP is Dense(hidden) -> SiLU -> Dense(width); its output has the transformer's width and is
used both as the start token and as the AdaLN condition.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models.attention import var_trunc_normal

LAT_LIMIT = 90.0
LON_LIMIT = 180.0


def sin_embed(theta_deg, num_freqs: int):
    """(...,) degrees -> (..., 2*num_freqs): sin and cos at 2^i cycles per 360°."""
    freqs = 2.0 ** jnp.arange(num_freqs, dtype=jnp.float32)
    turns = theta_deg.astype(jnp.float32)[..., None] / 360.0 * freqs
    phase = 2.0 * math.pi * (turns - jnp.floor(turns))  # frac() keeps float32 precise
    return jnp.concatenate([jnp.sin(phase), jnp.cos(phase)], axis=-1)


class GeoEmbed(nn.Module):
    """c_g for (B, 2) (lat, lon) degrees; rows with NaN, or `drop` True, get the learned null.

    Parameters: mlp_in/{kernel,bias}, mlp_out/{kernel,bias}, null (width,).
    """

    width: int
    num_freqs: int = 16
    hidden: Optional[int] = None  # default: width
    init_std: float = 0.02

    @nn.compact
    def __call__(self, coords, drop=None):
        coords = jnp.asarray(coords, jnp.float32)
        missing = jnp.any(jnp.isnan(coords), axis=-1)
        if drop is not None:
            missing = jnp.logical_or(missing, drop)
        safe = jnp.where(missing[:, None], 0.0, coords)  # NaN must not reach the MLP (grads)
        feats = jnp.concatenate(
            [sin_embed(safe[:, 0], self.num_freqs), sin_embed(safe[:, 1], self.num_freqs)], -1
        )
        # logical axis names for sharding (train/sharding.py)
        tn = nn.with_logical_partitioning(var_trunc_normal(self.init_std), ("mlp", "embed"))
        h = nn.Dense(self.hidden or self.width, kernel_init=tn, name="mlp_in")(feats)
        h = nn.Dense(self.width, kernel_init=tn, name="mlp_out")(nn.silu(h))
        null = self.param("null", var_trunc_normal(self.init_std), (self.width,), jnp.float32)
        return jnp.where(missing[:, None], null[None, :], h)


def null_coords(batch: int) -> np.ndarray:
    """(batch, 2) NaN coordinates: selects the null embedding (unconditional)."""
    return np.full((batch, 2), np.nan, np.float32)


def coord_dropout(rng, batch: int, rate: float):
    """(batch,) bool: which samples drop their coordinates to the null (CFG training)."""
    if rate <= 0:
        return jnp.zeros((batch,), bool)
    return jax.random.uniform(rng, (batch,)) < rate


def validate_coords(coords, batch: Optional[int] = None, *, allow_nan: bool = True) -> np.ndarray:
    """Checks host coordinates and returns them as (B, 2) float32; raises InputError (one line).

    Accepts None (-> all NaN, needs `batch` and allow_nan), a (2,) pair (broadcast to `batch`)
    or a (B, 2) array of (lat, lon) degrees. A row is either fully finite and in range
    (|lat| <= 90, |lon| <= 180) or fully NaN (no coordinates), the latter only if allow_nan.
    """
    if coords is None:
        if batch is None:
            raise InputError("coordinates are None and no batch size was given")
        if not allow_nan:
            raise InputError("coordinates are required here; expected (lat, lon) in degrees")
        return null_coords(batch)
    try:
        arr = np.asarray(coords, np.float32)
    except (TypeError, ValueError):
        raise InputError(f"coordinates {coords!r} are not numbers; expected (lat, lon) in degrees") from None
    if arr.ndim == 1 and arr.shape == (2,) and batch is not None:
        arr = np.broadcast_to(arr, (batch, 2)).copy()
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"coordinates have shape {arr.shape}; expected (batch, 2) = (lat, lon) in degrees")
    if batch is not None and arr.shape[0] != batch:
        raise InputError(f"{arr.shape[0]} coordinate rows for a batch of {batch}")
    nan = np.isnan(arr)
    partial = nan.any(1) & ~nan.all(1)
    if partial.any():
        i = int(np.argmax(partial))
        raise InputError(f"coordinate row {i} = {arr[i].tolist()} is half NaN; give both lat and lon or neither")
    if nan.any() and not allow_nan:
        i = int(np.argmax(nan.any(1)))
        raise InputError(f"coordinate row {i} is NaN; coordinates are required here")
    if np.isinf(arr).any():
        i = int(np.argmax(np.isinf(arr).any(1)))
        raise InputError(f"coordinate row {i} = {arr[i].tolist()} is infinite; expected |lat| <= 90, |lon| <= 180")
    with np.errstate(invalid="ignore"):
        bad = (np.abs(arr[:, 0]) > LAT_LIMIT) | (np.abs(arr[:, 1]) > LON_LIMIT)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"coordinate row {i} = (lat {arr[i, 0]:g}, lon {arr[i, 1]:g}) is out of range; "
            "expected |lat| <= 90 and |lon| <= 180 degrees, in (lat, lon) order"
        )
    return arr
