"""Training EarthMapper (task "earthmapper"): loss, frozen parts, data, eval, sample grid, export.

The model is models/earthmapper.py (config.model holds its fields, configs/earthmapper.py);
this file is everything the trainer needs around it.

    make_task() -> Task                     (train/trainer.REGISTRY["earthmapper"])
    init_params(config, rng, pretrained=None) -> params (logical axis names kept, for sharding)
    pretrained(config) -> part or None      config.model.var_init, a converted VAR directory,
        read once on the host (models/var_init.py); the trainer hands it to init_params
    load_frozen(config) -> Frozen           the frozen tokenizer of config.model.tokenizer_dir
        and, when SI targets are computed on the fly (config.model.si_dinov2, an official
        DINOv2 .pth), DINOv2; read from disk here, once, never while tracing
    loss_fn(params, batch, rng, config, frozen) -> (loss, metrics)
        batch: coords (B, 2) float (lat, lon) degrees, NaN rows = no coordinates; either
          sat_image, map_image (B, H, W, 3) float in [-1, 1] (tokenised on the fly) or
          sat_tokens, map_tokens (B, Σpn²) int32 (scales concatenated, row-major); SI targets
          (config.model.si_weight > 0): DINOv2 grids sat_sem, map_sem (B, g, g, D)
          (semantic.precompute_grids) or computed from the images with frozen.dinov2.
        loss = CE over the tokens of both modalities + si_weight · L_sem. Metrics: loss, ce,
        ce_sat, ce_map, acc_sat, acc_map, ce_scale_k / acc_scale_k (k = 0..K-1, both
        modalities), si_loss. Training rows drop coordinates / one modality / become directed
        rows as models/earthmapper.py describes.
    eval_host: config.eval.metrics (off by default): sampled sat->map SSIM/PSNR/RMSE(/LPIPS)
        on config.eval.tiles tiles, logged with the eval metrics
    eval_fn: the same loss without dropout, plus the batch's conditioning gains
        (cond_gain_sat2map, cond_gain_map2sat, cond_gain_none_*; evaluation/condition.py);
        data: the image pipeline (config.data.dir) or the
        pre-tokenised shards (config.data.tokens_dir)
    sample_fn: PNG grid, per example [satellite | generated map | real map | map | generated
        satellite | real satellite] (pre-tokenised data: "real" = tokenizer reconstructions);
        compiled once per run (the sampling Model is built once per config, weights are
        arguments of its compiled functions)
    export(params, config, workdir) -> WORKDIR/model, a directory `earthmapper_jax.load` opens
        (with its own copy of the tokenizer)
    flops_per_example(config) -> training FLOPs per example (transformer only)
"""

from __future__ import annotations

import functools
import json
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from earthmapper_jax.data import token_records as token_data
from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.evaluation import condition, pixels
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.io.files import atomic_dir
from earthmapper_jax.io.images import to_float, to_uint8, write_grid
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models import semantic
from earthmapper_jax.models.dinov2 import VARIANTS as DINOV2_VARIANTS
from earthmapper_jax.models.dinov2 import DinoV2, load_dinov2
from earthmapper_jax.models.geo import coord_dropout
from earthmapper_jax.models.layout import MAP, MODALITIES, SAT, joint_layout, to_joint
from earthmapper_jax.models.convert_var import TOKENIZER_SUBDIR
from earthmapper_jax.models.loading import Model
from earthmapper_jax.models.var_init import apply_var_init, read_var_init
from earthmapper_jax.sampling import translate
from earthmapper_jax.scales import flatten_tokens, split_tokens
from earthmapper_jax.tokenizer import Tokenizer
from earthmapper_jax.tokenizer import load as load_tokenizer
from earthmapper_jax.tokenizer.model import VQVAE
from earthmapper_jax.tokenizer.lpips import BACKBONES as LPIPS_NETS
from earthmapper_jax.tokenizer.lpips import load_lpips
from earthmapper_jax.tokenizer.model import build as build_tokenizer
from earthmapper_jax.train import image_data
from earthmapper_jax.train.preflight import VAR_INIT_MISSING, VAR_INIT_NONE, VAR_INIT_REQUIRED
from earthmapper_jax.train.tasks import Task

# ----------------------------------------------------------------------------- params


def init_params(config, rng, pretrained=None):
    """Fresh params (boxed with their logical axis names); `pretrained` overwrites the parts
    it holds (see `pretrained`)."""
    params = em.init_params(config["model"], rng, keep_axis_names=True)
    return params if pretrained is None else apply_var_init(params, pretrained)




def pretrained(config):
    """The VAR weights to start from (config.model.var_init), or None. The sentinels "required"
    and "none" are train/preflight.py's (the trainer checks them before anything is built;
    a direct caller with "required" gets the same line here)."""
    var_dir = config["model"].get("var_init", None)
    if var_dir == VAR_INIT_REQUIRED:
        raise InputError(VAR_INIT_MISSING)
    if not var_dir or var_dir == VAR_INIT_NONE:
        return None
    return read_var_init(var_dir, config["model"])


# ----------------------------------------------------------------------------- frozen parts


@struct.dataclass
class Frozen:
    """The untrained parts the loss needs: a pytree the trainer places on the devices once.
    The tokenizer's architecture is a static field, so the loss reads nothing from disk."""

    tokenizer: Any                   # tokenizer params
    dinov2: Any = None               # DINOv2 params, or None (SI targets come with the batch)
    tokenizer_config: tuple = struct.field(pytree_node=False, default=())  # sorted items

    @classmethod
    def of(cls, tokenizer_params, tokenizer_config: dict, dinov2=None) -> "Frozen":
        items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                             for k, v in dict(tokenizer_config).items()))
        return cls(tokenizer_params, dinov2, items)

    def tokenizer_module(self) -> VQVAE:
        return build_tokenizer(dict(self.tokenizer_config))


def si_on(mc) -> bool:
    return bool(int(mc.si_layer)) and float(mc.si_weight) > 0


def load_frozen(config) -> Frozen:
    mc = config["model"]
    dino_params = None
    if int(mc.si_layer) and float(mc.si_weight) > 0 and mc.get("si_dinov2", None):
        dino, dino_params = load_dinov2(mc.si_dinov2)
        want = DINOV2_VARIANTS[mc.si_encoder]
        got = {k: getattr(dino, k) for k in want}
        if got != want:
            raise CheckpointError(f"{mc.si_dinov2}: a DINOv2 with {got}, but si_encoder="
                                  f"{mc.si_encoder!r} is {want}")
    tok = load_tokenizer(mc.tokenizer_dir)
    if config.get("eval", {}).get("metrics", False):
        _eval_lpips(config)  # missing LPIPS files stop the run here, not at its first evaluation
    return Frozen.of(tok.params, tok.config, dino_params)


# ----------------------------------------------------------------------------- loss


def _tokens_and_inputs(mc, batch, frozen):
    """Per modality (flat tokens (B, Σpn²), VAR inputs (B, Σpn²-1, Cvae), K token maps)."""
    if frozen is None or frozen.tokenizer is None:
        raise InputError("the EarthMapper loss needs frozen=Frozen(tokenizer params, ...) "
                         "(see load_frozen)")
    tok, tp = frozen.tokenizer_module(), {"params": frozen.tokenizer}
    out = []
    for m in MODALITIES:
        if f"{m}_tokens" in batch:
            flat = jnp.asarray(batch[f"{m}_tokens"], jnp.int32)
            idx = split_tokens(flat, mc.patch_nums)
        elif f"{m}_image" in batch:
            idx = tok.apply(tp, jnp.asarray(batch[f"{m}_image"], jnp.float32), method=VQVAE.encode)
            idx = [jax.lax.stop_gradient(i) for i in idx]
            flat = flatten_tokens(idx)
        else:
            raise InputError(f"batch has neither {m}_tokens nor {m}_image")
        tf = jax.lax.stop_gradient(tok.apply(tp, idx, method=VQVAE.teacher_forcing_inputs))
        out.append((flat, tf, idx))
    return out


def _si_targets(mc, batch, frozen, token_maps):
    """SI targets per half (B, Σpn², D) for sat and map: stored with the batch, or computed
    with frozen DINOv2 (the reconstruction targets from the token maps, the image targets
    from the images)."""
    out = []
    target = mc.get("si_target", "image")
    for m, idx in zip(MODALITIES, token_maps):
        if f"{m}_sem" in batch:
            out.append(semantic.as_targets(batch[f"{m}_sem"], mc.patch_nums))
            continue
        if frozen is None or frozen.dinov2 is None or (target == "image" and f"{m}_image" not in batch):
            raise InputError(  # train/preflight.py stops this at start-up; direct callers land here
                f"SI is on (si_weight={mc.si_weight}) but the batch has no {m}_sem targets and "
                "no DINOv2 params to compute them; set config.model.si_dinov2 or precompute the "
                "targets (earthmapper prepare tokens --si-dinov2)")
        dino = DinoV2(**DINOV2_VARIANTS[mc.si_encoder])
        size = int(mc.si_image_size)
        if target == "reconstruction":
            out.append(semantic.reconstruction_targets(frozen.tokenizer_module(), frozen.tokenizer, idx,
                                                       dino, frozen.dinov2, mc.patch_nums, size))
        else:
            grid = semantic.dinov2_grid(dino, frozen.dinov2, batch[f"{m}_image"], size)
            out.append(semantic.targets_from_grid(grid, mc.patch_nums))
    return out


def loss_fn(params, batch, rng, config, frozen=None):
    """CE over both modalities (+ σ·SI); see module doc for the batch and the metrics."""
    mc = config["model"]
    module = em.build(mc)
    pn = tuple(int(p) for p in mc.patch_nums)
    directed_rate = float(mc.get("directed_rate", 0.0))
    (sat_flat, tf_sat, sat_idx), (map_flat, tf_map, map_idx) = _tokens_and_inputs(mc, batch, frozen)
    B = sat_flat.shape[0]
    coords = jnp.asarray(batch["coords"], jnp.float32)

    r_geo, r_cond, r_which, r_dir, r_lead, r_drop = jax.random.split(rng, 6)
    drop_geo = coord_dropout(r_geo, B, float(mc.coord_drop_rate))
    drop_any = coord_dropout(r_cond, B, float(mc.modality_drop_rate))
    which = jax.random.bernoulli(r_which, 0.5, (B,))  # True: the map half is the dropped one
    direction = None
    if directed_rate > 0:  # translation rows: the condition half shows its own tokens (no loss)
        directed = coord_dropout(r_dir, B, directed_rate)
        cond_m = jax.random.bernoulli(r_lead, 0.5, (B,)).astype(jnp.int32)  # SAT=0 / MAP=1
        direction = jnp.where(directed, cond_m, -1)
        # a translation row drops only its condition (translation guidance's unconditional
        # branch); dropping its target would leave the row without any loss
        which = jnp.where(directed, cond_m == MAP, which)
    null_sat, null_map = drop_any & ~which, drop_any & which
    skip_sat, skip_map = null_sat, null_map  # halves without a loss
    if direction is not None:
        skip_sat, skip_map = skip_sat | (direction == SAT), skip_map | (direction == MAP)

    coloc = {} if direction is None else em.coloc_inputs(
        bool(mc.get("coloc_cond", False)), frozen.tokenizer_module(), frozen.tokenizer,
        (sat_flat, map_flat), pn)
    logits, si_pred = module.apply(
        {"params": params}, coords, tf_sat, tf_map, drop_geo=drop_geo, null_sat=null_sat,
        null_map=null_map, ids_sat=sat_flat if direction is not None else None,
        ids_map=map_flat if direction is not None else None, direction=direction,
        deterministic=False, rngs={"dropout": r_drop}, **coloc)

    lay = joint_layout(pn)
    targets = to_joint(sat_flat[..., None], map_flat[..., None], pn)[..., 0]
    # a dropped half is an input-less branch at inference, a leading half is given: no loss
    keep = to_joint(jnp.broadcast_to(~skip_sat[:, None], sat_flat.shape)[..., None],
                    jnp.broadcast_to(~skip_map[:, None], map_flat.shape)[..., None], pn)[..., 0]
    keep = keep.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (B, L)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)

    def masked_mean(x, sel):  # sel: (L,) static bool numpy
        w = keep * jnp.asarray(sel, jnp.float32)[None]
        return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)

    ce = masked_mean(nll, np.ones(lay["length"], bool))
    metrics = {"ce": ce}
    for m, name in enumerate(MODALITIES):
        sel = lay["modality"] == m
        metrics[f"ce_{name}"] = masked_mean(nll, sel)
        metrics[f"acc_{name}"] = masked_mean(correct, sel)
    for k in range(len(pn)):
        sel = lay["scale"] == k
        metrics[f"ce_scale_{k}"] = masked_mean(nll, sel)
        metrics[f"acc_scale_{k}"] = masked_mean(correct, sel)

    loss = ce
    if si_on(mc):
        t_sat, t_map = _si_targets(mc, batch, frozen, (sat_idx, map_idx))
        per_tok = semantic.per_token_loss(si_pred, to_joint(t_sat, t_map, pn), mc.si_loss)
        si, _ = semantic.scale_mean(per_tok, lay["scale"], len(pn), keep)
        metrics["si_loss"] = si
        loss = loss + float(mc.si_weight) * si
    metrics["loss"] = loss
    return loss, metrics


EVAL_METRICS = ("loss", "ce", "ce_sat", "ce_map", "acc_sat", "acc_map", "si_loss")


def eval_fn(params, batch, rng, config, frozen=None):
    """The loss without condition dropout and drop-path (deterministic), its main metrics,
    and the condition-use figures of the batch (evaluation/condition.traced_gains:
    cond_gain_<dir> = CE with a shuffled condition - CE with the real one, cond_gain_none_<dir>
    = CE without a condition - with it; nats/token, teacher-forced, in translation rows)."""
    c = ml_collections.ConfigDict(config.to_dict())
    for key in ("coord_drop_rate", "modality_drop_rate", "drop_path_rate"):
        c.model[key] = 0.0
    _, m = loss_fn(params, batch, rng, c, frozen)
    out = {k: v for k, v in m.items() if k in EVAL_METRICS}
    (sat_flat, _, _), (map_flat, _, _) = _tokens_and_inputs(c.model, batch, frozen)
    if sat_flat.shape[0] >= 2:  # a shuffled condition needs another tile
        module, tok = em.build(c.model), frozen.tokenizer_module()
        directed = float(c.model.get("directed_rate", 0.0)) > 0
        coords = jnp.asarray(batch["coords"], jnp.float32)

        def target_logits(s, mp, cond_m, null):
            return condition.earthmapper_target_logits(module, params, tok, frozen.tokenizer, coords,
                                                       s, mp, cond_m, null, directed)
        out.update(condition.traced_gains(target_logits, sat_flat, map_flat))
    return out


def flops_per_example(config) -> float:
    """Training FLOPs per example (forward + backward, transformer only)."""
    mc = config["model"]
    L = 2 * sum(int(p) ** 2 for p in mc.patch_nums)
    C, d, V = int(mc.embed_dim), int(mc.depth), int(mc.vocab_size)
    return 3.0 * L * (2 * (12 * C * C * d + C * V) + 4 * L * C * d)


# ----------------------------------------------------------------------------- data


def train_data(config, *, seed, batch_size):
    if config.data.get("tokens_dir", None):
        return token_data.token_pipeline(config.data.tokens_dir, config.data.split, batch_size,
                                         seed=seed, augment=config.data.augment, num_epochs=None)
    return image_data.train_data(config, seed=seed, batch_size=batch_size)


def eval_split(config) -> str:
    if config.data.get("tokens_dir", None):
        return token_data.existing_split(config.data.tokens_dir, config.data.eval_split,
                                         config.data.split)
    return image_data.eval_split(config)


def eval_data(config, *, batch_size):
    if config.data.get("tokens_dir", None):
        return token_data.token_pipeline(config.data.tokens_dir, eval_split(config), batch_size,
                                         seed=config.seed, augment=False, num_epochs=1,
                                         shuffle=False)
    return image_data.eval_data(config, batch_size=batch_size)


def examples_per_epoch(config):
    if config.data.get("tokens_dir", None):
        return token_data.read_manifest(config.data.tokens_dir, config.data.split)["num_records"]
    return image_data.examples_per_epoch(config)


# ----------------------------------------------------------------------------- samples, export


def _model_config(config) -> dict:
    mc = config.model.to_dict()
    mc["mode"] = "earthmapper"
    return mc


@functools.lru_cache(maxsize=4)
def _sampling_model(model_json: str) -> Model:
    """A weightless Model of one config: every sample grid of a run takes its weights with
    `with_weights` and so reuses its compiled samplers (weights are arguments, not constants)."""
    return Model(json.loads(model_json), None, None)


def _pair_images(batch, config, tok):
    """(satellite, map) images of a batch; pre-tokenised data: the tokenizer's reconstructions."""
    if "sat_image" in batch:
        return np.asarray(batch["sat_image"]), np.asarray(batch["map_image"])
    pn = tuple(config.model.patch_nums)
    return tuple(np.asarray(tok.decode(split_tokens(jnp.asarray(batch[f"{m}_tokens"]), pn)))
                 for m in MODALITIES)


def _sampler(params, config, tok) -> Model:
    key = json.dumps(_model_config(config), sort_keys=True)
    return _sampling_model(key).with_weights(jax.device_get(params), tok)


def sample_fn(params, batch, rng, config, path, frozen=None):
    """The PNG grid of the module doc; returns rough L1 errors of both directions."""
    if jax.process_count() > 1:
        return None  # sampling a sharded model from one host's batch: not on pods
    tok = Tokenizer(jax.device_get(frozen.tokenizer), dict(frozen.tokenizer_config))
    sat, mp = _pair_images(batch, config, tok)
    model = _sampler(params, config, tok)
    coords = np.asarray(batch["coords"], np.float32)
    opts = dict(config.get("sample_options", {}) or {})
    r1, r2 = jax.random.split(rng)
    _, gen_map = translate(model, sat, "sat2map", r1, coords=coords, **opts)
    _, gen_sat = translate(model, mp, "map2sat", r2, coords=coords, **opts)
    gen_map, gen_sat = np.asarray(gen_map), np.asarray(gen_sat)
    if jax.process_index() == 0:
        write_grid(path, [[sat[i], gen_map[i], mp[i], mp[i], gen_sat[i], sat[i]]
                          for i in range(len(sat))])
    err = lambda a, b: float(np.mean(np.abs(a - b)))  # noqa: E731 - rough progress signal
    return {"l1_sat2map": err(gen_map, mp), "l1_map2sat": err(gen_sat, sat)}


def _eval_lpips(config):
    """LPIPS params of config.eval, or None when no weight files are set."""
    ec = config.eval
    if not (ec.get("lpips_backbone", None) or ec.get("lpips_weights", None)):
        return None
    if ec.lpips_net not in LPIPS_NETS:
        raise InputError(f"config.eval.lpips_net={ec.lpips_net!r}: expected one of {sorted(LPIPS_NETS)}")
    return load_lpips(ec.lpips_backbone, ec.lpips_weights, ec.lpips_net,
                      flags=("config.eval.lpips_backbone", "config.eval.lpips_weights"))


def eval_host(params, rng, config, frozen=None):
    """config.eval.metrics: sat->map SSIM, PSNR, RMSE (and LPIPS) of sampled maps on the first
    config.eval.tiles tiles of the eval split, rounded to 8 bits as `earthmapper evaluate`
    scores them (docs/evaluation.md); {} when off or on a pod."""
    if not config.get("eval", {}).get("metrics", False) or jax.process_count() > 1:
        return {}
    n = int(config.eval.tiles)
    batch = next(iter(eval_data(config, batch_size=n)))
    tok = Tokenizer(jax.device_get(frozen.tokenizer), dict(frozen.tokenizer_config))
    sat, mp = _pair_images(batch, config, tok)
    opts = dict(config.get("sample_options", {}) or {})
    _, gen = translate(_sampler(params, config, tok), sat, "sat2map", rng,
                       coords=np.asarray(batch["coords"], np.float32), **opts)
    gen = to_float(to_uint8(gen))
    real = to_float(to_uint8(mp))  # reconstructions of token data are floats
    scores = pixels.paired_metrics((gen + 1) / 2, (real + 1) / 2)
    out = {name: float(np.mean(v)) for name, v in scores.items()}
    lp = _eval_lpips(config)
    if lp is not None:
        out["lpips"] = float(np.mean(pixels.paired_lpips(lp, gen, real, net=config.eval.lpips_net)))
    return {f"sat2map_{k}": v for k, v in out.items()}


def export(params, config, workdir):
    """WORKDIR/model: a directory `earthmapper_jax.load` opens, self-contained (a copy of the
    tokenizer in MODEL/tokenizer), so `mv` or `cp -r` of it keeps it working."""
    dst = pathlib.Path(workdir).absolute() / "model"
    tok_dir = pathlib.Path(config.model.tokenizer_dir).absolute()
    meta = {"tokenizer_source": str(tok_dir)}  # provenance only; loading uses the copy
    with atomic_dir(dst, overwrite=True) as stage:
        save_params(stage, params, _model_config(config), kind="earthmapper", meta=meta)
        shutil.copytree(tok_dir, stage / TOKENIZER_SUBDIR)
    return dst


def make_task() -> Task:
    return Task(name="earthmapper", init_params=init_params, loss_fn=loss_fn,
                train_data=train_data, pretrained=pretrained, load_frozen=load_frozen,
                eval_data=eval_data, eval_split=eval_split, eval_fn=eval_fn, eval_host=eval_host,
                sample_fn=sample_fn, export=export, examples_per_epoch=examples_per_epoch,
                flops_per_example=flops_per_example)
