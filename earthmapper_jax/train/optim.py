"""VAR's optimiser recipe as an optax chain (as VAR's train.py and utils/lr_control.py set it up).

clip_by_global_norm(2.0) -> Adam(β 0.9, 0.95) -> decoupled weight decay (0.05, not on VAR's
no-decay list) -> learning rate: peak = base_lr · global_batch / 256, linear warm-up from
0.005·peak, then VAR's `lin0`: flat for the first 5 % of the remaining steps, then linear to
`final_lr_frac`·peak at the last step. Weight decay may follow VAR's cosine from `weight_decay`
to `weight_decay_end` (equal by default, i.e. constant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# A parameter whose '/'-joined path contains one of these gets no weight decay (VAR's list);
# nor does any 1-D parameter or any path ending in "bias". Configs may extend the list
# (`config.optim.no_decay_extra`) with model-specific names such as a learned null coordinate.
NO_DECAY_KEYWORDS = (
    "cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
    "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul",
)


def peak_learning_rate(optim_config, global_batch: int) -> float:
    """VAR's linear scaling rule: base_lr per 256 images."""
    return float(optim_config.base_lr) * global_batch / 256.0


def lr_schedule(optim_config, global_batch: int, total_steps: int, warmup_steps: int):
    """Step -> learning rate (VAR's `lin0` with a linear warm-up)."""
    peak = peak_learning_rate(optim_config, global_batch)
    wp0 = float(optim_config.get("warmup_start", 0.005))
    wpe = float(optim_config.get("final_lr_frac", 0.1))
    hold = float(optim_config.get("hold_frac", 0.05))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    decay_len = max(1, total_steps - 1 - warmup_steps)

    def schedule(step):
        it = jnp.asarray(step, jnp.float32)
        warm = wp0 + (1.0 - wp0) * it / max(1, warmup_steps)
        pasd = jnp.clip((it - warmup_steps) / decay_len, 0.0, 1.0)
        rest = 1.0 - pasd
        decay = jnp.where(pasd < hold, 1.0, wpe + (1.0 - wpe) * rest / (1.0 - hold))
        return peak * jnp.where(it < warmup_steps, warm, decay)

    return schedule


def wd_schedule(optim_config, total_steps: int):
    """VAR's weight-decay cosine from `weight_decay` to `weight_decay_end` over the run."""
    wd = float(optim_config.weight_decay)
    wde = optim_config.get("weight_decay_end", None)
    wde = wd if wde is None else float(wde)
    if wde == wd:
        return wd

    def schedule(step):
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(1, total_steps - 1), 0.0, 1.0)
        return wde + (wd - wde) * (0.5 + 0.5 * jnp.cos(jnp.pi * frac))

    return schedule


def path_name(path) -> str:
    """'/'-joined parameter path ('blocks_0/attn/mat_qkv/kernel')."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def decay_mask(params, extra_keywords=()):
    """True where weight decay applies (VAR: matrices, not biases/norms/positional tables)."""
    keywords = tuple(NO_DECAY_KEYWORDS) + tuple(extra_keywords)

    def decays(path, p):
        name = path_name(path)
        if jnp.ndim(p) <= 1 or name.endswith("bias"):
            return False
        return not any(k in name for k in keywords)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_config, global_batch: int, total_steps: int, warmup_steps: int):
    """Returns (optax transformation, lr schedule)."""
    lr = lr_schedule(optim_config, global_batch, total_steps, warmup_steps)
    extra = tuple(optim_config.get("no_decay_extra", ()) or ())
    parts = []
    clip = optim_config.get("clip_norm", 2.0)
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    parts += [
        optax.scale_by_adam(b1=float(optim_config.get("b1", 0.9)),
                            b2=float(optim_config.get("b2", 0.95)),
                            eps=float(optim_config.get("eps", 1e-8))),
        optax.add_decayed_weights(wd_schedule(optim_config, total_steps),
                                  mask=lambda p: decay_mask(p, extra)),
        optax.scale_by_learning_rate(lr),
    ]
    return optax.chain(*parts), lr


def warmup_steps_from(optim_config, steps_per_epoch: int, total_steps: int) -> int:
    """`warmup_steps` if given, else `warmup_epochs`·steps/epoch, else VAR's default ep/50."""
    if optim_config.get("warmup_steps", None) is not None:
        return int(optim_config.warmup_steps)
    if optim_config.get("warmup_epochs", None) is not None:
        return int(round(float(optim_config.warmup_epochs) * steps_per_epoch))
    return total_steps // 50
