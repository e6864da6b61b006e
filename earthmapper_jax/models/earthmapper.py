"""EarthMapper's GJSA transformer (Geo-conditioned Joint Scale Autoregression): how it differs
from the shared backbone (models/backbone.py), its config and its build.

    model_config(name="d16" | "d20" | "d24" | "d30" | "tiny", **overrides) -> ConfigDict
    check_config(config)                 InputError for impossible settings
    build(config, **overrides) -> EarthMapper
    condition_pyramid(f_hat, patch_nums) -> (B, Σpn², Cvae)   coloc_cond's input
    coloc_inputs(coloc_cond, tok_module, tok_params, (sat_flat, map_flat), patch_nums) -> dict
    init_params(config, rng, keep_axis_names=False) -> fresh params
    (training: train/earthmapper_task.py; starting from VAR weights: models/var_init.py)

Sequence (models/layout.py): per scale k a satellite block s_k then a map block m_k, each pn_k²
tokens; both halves of a scale share that scale's level embedding and per-scale position
embedding (VAR's tables, so VAR weights transfer); a learned modality embedding (2, C),
initialised to zero, tells them apart. The first scale of each half is a start token c_g +
pos_start (+ level/position + modality), so both halves start from the coordinates; c_g
(models/geo.py) is also the AdaLN condition of every block and of the head. The input at the
positions of scale k of a half is, as in VAR, that modality's f_hat after scales < k,
area-resized to pn_k (so no position ever holds its own scale's tokens).

Attention (config `within_scale`): "all" (default, the paper's Eq. 10 p(r_k | r_<k, c_g): a
scale-k token sees both halves' positions of scales <= k, and since the inputs at scale k hold
scales < k only, s_k and m_k still exchange no scale-k tokens, as §IV-F says), "group" (the two
halves of a scale do not attend to each other at all, so the satellite half at scale k sees map
tokens up to scale k-2 only), "ordered" (the map block sees the satellite block of its scale).

Directed rows (config directed_rate, default 0 = the paper's pure joint model; the project's
variant `configs/earthmapper_train.py:cnsatmap_d24_directed` uses 0.5). In joint rows a target
token of scale k sees the condition only up to scale k-1; the CPU learning check compares both
(docs/earthmapper.md, "The paper's model against its deviations"). A directed row picks one half as the condition: its
inputs also carry the embedding of its own current-scale tokens (cond_token_embed (V, C) +
lead_embed), the target half attends to it inside the scale (layout.directed_mask) and only
the target is in the loss. translate() and inpaint(condition=...) sample in this layout;
generate() in the joint one.

Co-located conditioning (config coloc_cond, default False = the paper; a small-budget lever,
docs/earthmapper.md "Condition use"): in a directed row the target half's input at every
position of scale k (start token included) also gets coloc_proj(the condition's whole f_hat,
area-resized to pn_k, at that position) (`condition_pyramid`), so each target token starts from
what the source shows at its place, as a U-Net's skip connections give pix2pix. Only the
parameter coloc_proj/{kernel (Cvae, C), bias} is added, zero-initialised.

Condition dropout for multi-term CFG: with prob coord_drop_rate a sample's coordinates become
the learned null (c_g = null); with prob modality_drop_rate one modality (chosen at random) has
its inputs at scales >= 1 replaced by a learned null embedding (cond_null) and its tokens
excluded from the loss: the other half learns p(target | coordinates) without the condition
image, the "nocond"/"uncond" branches of the sampler.

Parameters: the backbone's, plus geo/{mlp_in, mlp_out, null}, modality_embed (2, C),
cond_null (C,), cond_token_embed (V, C), lead_embed (C,), [si_head/{fc1, fc2, fc3}].
Module methods (each also a sampler building block, module.apply(..., method=...)):
condition, start_tokens, scale_tokens, embed_sequence, transformer, logits_from_hidden, align;
__call__ is the teacher-forced pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import backbone, semantic
from earthmapper_jax.models.attention import var_trunc_normal
from earthmapper_jax.models.backbone import Backbone, logical
from earthmapper_jax.models.dinov2 import VARIANTS as DINOV2_VARIANTS
from earthmapper_jax.models.geo import GeoEmbed
from earthmapper_jax.models.layout import MAP, SAT, directed_mask, joint_mask, to_joint
from earthmapper_jax.models.masks import WITHIN_SCALE_CHOICES
from earthmapper_jax.scales import scale_offsets, split_tokens
from earthmapper_jax.tokenizer.resize import area_resize

# ----------------------------------------------------------------------------- config / build


def model_config(name: str = "d16", **overrides) -> ml_collections.ConfigDict:
    """EarthMapper model config: VAR's shapes for `name` (tiny, d16, d20, d24, d30) plus the
    GJSA, geo and SI fields (see configs/earthmapper.py for the documented list)."""
    c = backbone.base_config(name)
    c.mode = "earthmapper"
    c.within_scale = "all"         # "all" (the paper's Eq. 10, default) | "group" | "ordered"
    c.geo_num_freqs = 16           # SinEmbed frequencies 2^0 .. 2^15 cycles per 360°
    c.geo_hidden = 0               # geo MLP hidden width; 0 = embed_dim
    c.coord_drop_rate = 0.1        # coordinates -> learned null (CFG), as VAR's label dropout
    c.modality_drop_rate = 0.1     # one modality's inputs -> learned null (condition CFG terms)
    c.directed_rate = 0.0          # share of rows trained as translations (0 = the paper's pure joint model)
    c.coloc_cond = False           # directed rows: + the condition's f_hat pyramid at the target's positions
    c.si_layer = max(1, c.depth // 3) if name != "tiny" else 1  # 1-based; 0 = no SI
    c.si_weight = semantic.DEFAULT_WEIGHT
    c.si_loss = "sqnorm"           # Eq. 13's squared norm (semantic.py); "mse" | "cosine" (REPA's)
    c.si_target = "reconstruction"  # Eq. 13: DINOv2 of the scale-k reconstruction | "image" (cheaper)
    c.si_encoder = "vitb14"        # DINOv2 variant of the targets (dinov2.VARIANTS)
    c.si_dinov2 = ""               # official DINOv2 .pth for on-the-fly targets ("" = precomputed)
    c.si_image_size = 224          # DINOv2 input size (16×16 patches for /14)
    c.si_hidden = 2048
    c.tokenizer_dir = ""           # frozen tokenizer directory (training)
    c.var_init = ""                # converted VAR directory to start from ("" = scratch)
    if name == "tiny":
        c.si_encoder, c.si_hidden, c.si_image_size = "test_tiny", 64, 56
    for k, v in overrides.items():
        c[k] = v
    c.si_dim = DINOV2_VARIANTS[c.si_encoder]["embed_dim"] if c.si_encoder in DINOV2_VARIANTS else 0
    check_config(c)
    return c


def check_config(c) -> None:
    """One-line InputError for settings that cannot form an EarthMapper model."""
    backbone.check_config(c)  # width/heads, dtype, attention kernels, remat, patch_nums
    if c.within_scale not in WITHIN_SCALE_CHOICES:
        raise InputError(f"within_scale={c.within_scale!r}; expected one of {WITHIN_SCALE_CHOICES}")
    if not 0 <= int(c.si_layer) <= int(c.depth):
        raise InputError(f"si_layer={c.si_layer}; expected 0 (off) .. depth={c.depth}")
    if c.si_encoder not in DINOV2_VARIANTS:
        raise InputError(f"si_encoder={c.si_encoder!r}; expected one of {sorted(DINOV2_VARIANTS)}")
    if c.si_loss not in semantic.SI_LOSSES:
        raise InputError(f"si_loss={c.si_loss!r}; expected one of {semantic.SI_LOSSES}")
    if c.get("si_target", "image") not in semantic.SI_TARGETS:
        raise InputError(f"si_target={c.si_target!r}; expected one of {semantic.SI_TARGETS}")
    for key in ("coord_drop_rate", "modality_drop_rate"):
        if not 0.0 <= float(c.get(key, 0.0)) < 1.0:
            raise InputError(f"{key}={c.get(key)}; expected a probability in [0, 1)")
    if not 0.0 <= float(c.get("directed_rate", 0.0)) <= 1.0:
        raise InputError(f"directed_rate={c.get('directed_rate')}; expected a probability in [0, 1]")
    if c.get("coloc_cond", False) and not float(c.get("directed_rate", 0.0)) > 0:
        raise InputError("coloc_cond=True conditions translation rows only; expected "
                         f"directed_rate > 0, got {c.get('directed_rate')}")


def build(c, **overrides) -> "EarthMapper":
    """The Linen module of a model config (ConfigDict or dict); overrides replace fields."""
    c = backbone.as_config(c, overrides)
    check_config(c)
    return EarthMapper(
        **backbone.module_fields(c), within_scale=c.within_scale,
        geo_num_freqs=int(c.geo_num_freqs), geo_hidden=int(c.geo_hidden),
        si_layer=int(c.si_layer), si_dim=int(c.si_dim), si_hidden=int(c.si_hidden),
        coloc_cond=bool(c.get("coloc_cond", False)),
    )


def init_params(c, rng, *, keep_axis_names: bool = False):
    """Fresh fp32 parameters of a model config (VAR's init for the backbone). With
    keep_axis_names the leaves stay nn.LogicallyPartitioned boxes (the trainer shards by them)."""
    module = build(c)
    coords = jnp.zeros((1, 2), jnp.float32)
    tf = jnp.zeros((1, module.seq_len - module.first_l, module.cvae), jnp.float32)
    params = jax.jit(module.init)(rng, coords, tf, tf)["params"]
    return params if keep_axis_names else nn.meta.unbox(params)


def condition_pyramid(f_hat, patch_nums):
    """A half's whole f_hat (B, g, g, Cvae) area-resized to every scale, flattened in VAR's
    order (B, Σpn², Cvae): what coloc_cond adds (projected) at the other half's positions."""
    B, C = f_hat.shape[0], f_hat.shape[-1]
    return jnp.concatenate([area_resize(f_hat, int(pn)).reshape(B, -1, C) for pn in patch_nums], 1)


def coloc_inputs(coloc_cond: bool, tok_module, tok_params, flats, patch_nums) -> dict:
    """{pyr_sat, pyr_map} for a call of the module (empty when coloc_cond is off): each half's
    pyramid from its flat tokens flats = (sat (B, Σpn²), map (B, Σpn²)) via the tokenizer."""
    if not coloc_cond:
        return {}
    out = {}
    for name, flat in zip(("pyr_sat", "pyr_map"), flats):
        f_hat = tok_module.apply({"params": tok_params}, split_tokens(flat, patch_nums), method="fhat")
        out[name] = jax.lax.stop_gradient(condition_pyramid(f_hat, patch_nums))
    return out


# ----------------------------------------------------------------------------- the module


class EarthMapper(Backbone):
    """GJSA transformer (see module doc for the layout and the parameters)."""

    within_scale: str = "group"
    geo_num_freqs: int = 16
    geo_hidden: int = 0
    si_layer: int = 0  # 1-based block whose output SI aligns; 0 = no SI head
    si_dim: int = 768
    si_hidden: int = 2048
    coloc_cond: bool = False

    def setup(self):
        super().setup()
        C, tn = self.embed_dim, var_trunc_normal(self.init_std)
        self.geo = GeoEmbed(C, self.geo_num_freqs, self.geo_hidden or None, self.init_std, name="geo")
        self.modality_embed = self.param("modality_embed", logical(nn.initializers.zeros, None, "embed"),
                                         (2, C), jnp.float32)
        self.cond_null = self.param("cond_null", tn, (C,), jnp.float32)
        # directed rows: the condition half also sees its own current-scale token ids
        self.cond_token_embed = nn.Embed(self.vocab_size, C, embedding_init=logical(tn, "vocab", "embed"),
                                         name="cond_token_embed")
        self.lead_embed = self.param("lead_embed", nn.initializers.zeros, (C,), jnp.float32)
        if self.si_layer:
            self.si_head = semantic.AlignmentMLP(self.si_hidden, self.si_dim, name="si_head")
        if self.coloc_cond:
            self.coloc_proj = nn.Dense(C, kernel_init=nn.initializers.zeros, name="coloc_proj")

    # -- embeddings (each method is also a sampler building block) ---------------------------

    def condition(self, coords, drop=None):
        """c_g (B, C) of (lat, lon) coordinates; NaN rows or drop=True -> the null."""
        return self.geo(coords, drop)

    def half_embeddings(self, begin: int, end: int, modality: int):
        """lvl + pos + modality embeddings of half positions [begin, end) (static), (n, C)."""
        return self.level_position(begin, end) + self.modality_embed[modality]

    def _lead(self, ids, lead):
        """Where lead (B,): the embedding of a condition half's current-scale token ids (B, n)
        plus the lead embedding; 0 elsewhere. ids None -> None."""
        if ids is None:
            return None
        add = self.cond_token_embed(ids) + self.lead_embed[None, None]
        return jnp.where(lead[:, None, None], add, 0.0)

    def _coloc(self, pyramid, lead):
        """Where lead (B,) (the other half leads): coloc_proj of the condition's f_hat pyramid
        (B, n, Cvae) at these positions; None when off or not given."""
        if not self.coloc_cond or pyramid is None or lead is None:
            return None
        return jnp.where(lead[:, None, None], self.coloc_proj(pyramid.astype(jnp.float32)), 0.0)

    def start_tokens(self, cond, ids_sat=None, ids_map=None, lead_sat=None, lead_map=None,
                     pyr_sat=None, pyr_map=None):
        """Scale-0 tokens of both halves, joint layout (B, 2·first_l, C). ids_*: a leading
        (condition) half's scale-0 token ids (B, first_l), used where lead_*; pyr_*: that half's
        f_hat pyramid at these positions (coloc_cond), added to the other half."""
        sos = cond[:, None, :] + self.pos_start[None]
        n = self.first_l
        out = []
        leads, pyrs = (lead_sat, lead_map), (pyr_sat, pyr_map)
        for m, ids, lead in ((SAT, ids_sat, lead_sat), (MAP, ids_map, lead_map)):
            x = sos + self.half_embeddings(0, n, m)[None]
            if ids is not None:
                x = x + self._lead(ids, lead)
            co = self._coloc(pyrs[1 - m], leads[1 - m])
            if co is not None:
                x = x + co
            out.append(x)
        return jnp.concatenate(out, 1)

    def scale_tokens(self, x_sat, x_map, si: int, null_sat=None, null_map=None, lead_sat=None,
                     lead_map=None, ids_sat=None, ids_map=None, pyr_sat=None, pyr_map=None):
        """Scale-si (>= 1) tokens, joint layout (B, 2pn², C), from each half's input features
        (B, pn², Cvae); null_*: (B,) bool, that half's input becomes the learned null; ids_*
        with lead_*: a leading half's own scale-si token ids (B, pn²); pyr_*: a half's f_hat
        pyramid at scale si (B, pn², Cvae) for the other half (coloc_cond)."""
        begin, end = scale_offsets(self.patch_nums)[si]
        out = []
        leads, pyrs = (lead_sat, lead_map), (pyr_sat, pyr_map)
        for m, x, null, lead, ids in ((SAT, x_sat, null_sat, lead_sat, ids_sat),
                                      (MAP, x_map, null_map, lead_map, ids_map)):
            w = self.word_embed(x.astype(jnp.float32))
            if ids is not None:
                w = w + self._lead(ids, lead)
            if null is not None:
                w = jnp.where(null[:, None, None], self.cond_null[None, None], w)
            co = self._coloc(pyrs[1 - m], leads[1 - m])
            if co is not None:
                w = w + co
            out.append(w + self.half_embeddings(begin, end, m)[None])
        return jnp.concatenate(out, 1)

    def embed_sequence(self, cond, tf_sat, tf_map, null_sat=None, null_map=None, ids_sat=None,
                       ids_map=None, lead_sat=None, lead_map=None, pyr_sat=None, pyr_map=None):
        """Teacher-forced input (B, L, C) from c_g and both halves' VAR inputs (B, Σpn²-1, Cvae);
        a leading half (lead_*) also gets the embedding of its own tokens ids_* (B, Σpn²), and
        with coloc_cond its f_hat pyramid pyr_* (B, Σpn², Cvae) goes to the other half."""
        sos = cond[:, None, :] + self.pos_start[None]
        later = jnp.arange(self.seq_len) >= self.first_l  # positions past the start tokens
        halves = []
        leads, pyrs = (lead_sat, lead_map), (pyr_sat, pyr_map)
        for m, tf, null, ids, lead in ((SAT, tf_sat, null_sat, ids_sat, lead_sat),
                                       (MAP, tf_map, null_map, ids_map, lead_map)):
            w = jnp.concatenate([sos, self.word_embed(tf.astype(jnp.float32))], 1)
            if ids is not None:
                w = w + self._lead(ids, lead)
            if null is not None:
                w = jnp.where(null[:, None, None] & later[None, :, None], self.cond_null[None, None], w)
            co = self._coloc(pyrs[1 - m], leads[1 - m])
            if co is not None:
                w = w + co
            halves.append(w + self.half_embeddings(0, self.seq_len, m)[None])
        return to_joint(halves[0], halves[1], self.patch_nums)

    def align(self, h):
        """SI alignment MLP on captured hidden states (..., C) -> (..., si_dim)."""
        return self.si_head(h)

    def __call__(self, coords, tf_sat, tf_map, *, drop_geo=None, null_sat=None, null_map=None,
                 ids_sat=None, ids_map=None, direction=None, pyr_sat=None, pyr_map=None,
                 deterministic: bool = True):
        """Teacher-forced pass: (logits (B, L, V) fp32, SI predictions (B, L, si_dim) or None).

        direction: optional (B,) int, -1 = joint row, SAT/MAP = a translation row whose
        condition half is that modality: its inputs also carry its own tokens ids_* (B, Σpn²)
        (unless nulled) and the row uses directed_mask; pyr_*: each half's f_hat pyramid
        (condition_pyramid) for coloc_cond."""
        cond = self.condition(coords, drop_geo)
        if self.is_initializing():  # create the directed-row parameters whatever the inputs
            self._lead(jnp.zeros((1, 1), jnp.int32), jnp.zeros((1,), bool))
            self._coloc(jnp.zeros((1, 1, self.cvae)), jnp.zeros((1,), bool))
        lead = [None, None]
        if direction is not None:
            for m, null in ((SAT, null_sat), (MAP, null_map)):
                lead[m] = direction == m
                if null is not None:
                    lead[m] = lead[m] & ~null
        x = self.embed_sequence(cond, tf_sat, tf_map, null_sat, null_map, ids_sat, ids_map,
                                lead[0], lead[1], pyr_sat, pyr_map)
        mask = jnp.asarray(joint_mask(self.patch_nums, self.within_scale))[None, None]
        if direction is not None and self.within_scale != "all":
            masks = jnp.asarray(np.stack([directed_mask(self.patch_nums, self.within_scale, d)
                                          for d in (SAT, MAP, None)]))
            mask = masks[jnp.where(direction < 0, 2, direction)][:, None]
        capture = self.si_layer - 1 if self.si_layer else None
        h, _, captured = self.transformer(x, cond, mask, deterministic=deterministic,
                                          capture_layer=capture)
        logits = self.logits_from_hidden(h, cond)
        return logits, (self.align(captured) if self.si_layer else None)
