"""The train state: one pytree that jit'd steps take, donate and return, and Orbax saves."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """step (int32 scalar), fp32 master params, optax state, base RNG key data (uint32), and
    `extra`: untrained task state that must survive a resume (e.g. codebook code ages).

    The key is stored as raw key data so Orbax saves it like any array; each step derives
    its randomness as fold_in(key, step), so a resumed run draws exactly the same numbers.
    """

    step: jax.Array
    params: dict
    opt_state: object
    rng: jax.Array
    extra: dict = flax.struct.field(default_factory=dict)

    def step_key(self) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)

    def to_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state,
                "rng": self.rng, "extra": self.extra}

    @classmethod
    def from_dict(cls, d) -> "TrainState":
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"], rng=d["rng"],
                   extra=d.get("extra") or {})


def new_rng_data(seed: int) -> jax.Array:
    """Raw key data of the base key (threefry: uint32[2])."""
    return jax.random.key_data(jax.random.key(seed))


def create(params, tx, seed: int, extra=None) -> TrainState:
    """A fresh state at step 0 (jit this with out_shardings to give it its sharding)."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=new_rng_data(seed), extra=extra if extra is not None else {})
