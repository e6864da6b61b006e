"""EarthMapper's GJSA transformer (Geo-conditioned Joint Scale Autoregression) and its task.

Task interface for the generic trainer (config = the training ConfigDict, model fields under
`config.model`, see configs/earthmapper.py):

    init_params(config, rng, var_init_dir=None) -> params
        Fresh params; with var_init_dir (or config.model.var_init) a converted VAR directory
        (`earthmapper convert var`, kind "var"): its blocks, head, word/position/level
        embeddings are copied (position/level embeddings are shared by both halves), the class
        table is dropped (its null row seeds the null coordinate and the geo MLP's output
        bias, so every coordinate starts as VAR's unconditional model), modality embeddings
        start at zero.
    load_frozen(config) -> frozen
        {"tokenizer": params, "dinov2": params or None}: the frozen tokenizer of
        config.model.tokenizer_dir and, when SI is on and config.model.si_dinov2 names an
        official DINOv2 .pth, its converted params. Pass it to loss_fn (as a jit argument, or
        bound with functools.partial).
    loss_fn(params, batch, rng, config, frozen) -> (loss, metrics)
        batch (dict of arrays):
          coords (B, 2) float (lat, lon) degrees, NaN rows = no coordinates;
          either   sat_image, map_image (B, H, W, 3) float in [-1, 1] (tokenised on the fly)
          or       sat_tokens, map_tokens (B, Σpn²) int32 (scales concatenated, row-major);
          SI targets (if config.model.si_weight > 0), either DINOv2 grids precomputed with
          semantic.precompute_grids: sat_sem, map_sem (B, g, g, D), or computed on the fly
          from the images with frozen["dinov2"].
        loss = CE over the tokens of both modalities + si_weight · L_sem. Metrics: loss, ce,
        ce_sat, ce_map, acc_sat, acc_map, ce_scale_k / acc_scale_k (k = 0..K-1, both
        modalities), si_loss.

Sequence layout (DESIGN §3.4): per scale k a satellite block s_k then a map block m_k, each pn_k²
tokens in row-major order: L = 2·Σpn² (1360 at 256²). Both halves of a scale share that scale's
level embedding and per-scale position embedding (VAR's tables, so VAR weights transfer);
a learned modality embedding (2, C), initialised to zero, tells them apart. The first scale of
each half is a start token c_g + pos_start (+ level/position + modality), so both halves start
from the coordinates; c_g is also the AdaLN condition of every block and of the head.
The input at the positions of scale k of a half is, as in VAR, that modality's f_hat after
scales < k, area-resized to pn_k (so no position ever holds its own scale's tokens).

Attention (config `within_scale`, via masks.block_causal_mask with group = modality): a token
always sees every token, of both modalities, of coarser scales, never a finer scale, and inside
its own scale
  "group" (default): only its own modality's block. The two halves of a scale never exchange
          information, as the paper states ("precludes direct information exchange between
          the generated paired images at each step"), so s_k and m_k are sampled
          independently given the past. Note the consequence: the inputs at m_k encode map
          scales < k, so under "group" the satellite half at scale k sees map tokens up to
          scale k-2 only (through the map positions of scales <= k-1).
  "all":   both blocks of its scale: s_k and m_k are still sampled independently (their inputs
          hold scales < k only) but each sees the other modality up to scale k-1, exactly
          Eq. 10's p(r_k | r_<k, c_g).
  "ordered": the map block sees the satellite block of its scale, not the reverse.

Directed rows (config directed_rate, default 0.5; 0 = the paper's pure joint model). In joint
rows a target token of scale k sees the condition only up to scale k-1, the resolution its own
exact teacher-forced history already has, and the CPU learning check measured the pure joint
model translating exactly as well as generating from coordinates alone (docs/earthmapper.md).
A directed row picks one half as the condition: its inputs also carry the embedding of its own
current-scale tokens (cond_token_embed (V, C) + lead_embed), the target half attends to it
inside the scale (directed_mask: "ordered", condition first) and only the target is in the
loss. translate() and inpaint(condition=...) sample in this layout; generate() in the joint one.

Condition dropout for multi-term CFG: with prob coord_drop_rate a sample's coordinates become
the learned null (c_g = null); with prob cond_drop_rate one modality (chosen at random) has
its inputs at scales >= 1 replaced by a learned null embedding and its tokens excluded from the
loss: the other half learns p(target | coordinates) without the condition image, the
"nocond"/"uncond" branches of the sampler.

Parameters (beyond VAR's word_embed, pos_start, pos_1LC, lvl_embed, blocks, head_nm, head):
geo/{mlp_in, mlp_out, null}, modality_embed (2, C), cond_null (C,), cond_token_embed (V, C),
lead_embed (C,), [si_head/{fc1, fc2, fc3}].
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.models import semantic
from earthmapper_jax.models.attention import var_trunc_normal
from earthmapper_jax.models.blocks import AdaLNBeforeHead, BlockStack, LogitsHead
from earthmapper_jax.models.geo import GeoEmbed, coord_dropout
from earthmapper_jax.models.masks import WITHIN_SCALE_CHOICES, block_causal_mask, scale_ids
from earthmapper_jax.models.var import DTYPES, resolved_init_std, var_config
from earthmapper_jax.models.var import check_config as var_check_config

SAT, MAP = 0, 1
MODALITIES = ("sat", "map")


# ----------------------------------------------------------------------------- joint layout


@functools.lru_cache(maxsize=None)
def _layout(patch_nums: tuple):
    half = scale_ids(patch_nums)
    Lh = len(half)
    scale, modality, half_index, begins = [], [], [], []
    b = 0
    for si, pn in enumerate(patch_nums):
        n = pn * pn
        begins.append(2 * b)
        for m in (SAT, MAP):
            scale.append(np.full(n, si, np.int32))
            modality.append(np.full(n, m, np.int32))
            half_index.append(np.arange(b, b + n, dtype=np.int32))
        b += n
    out = dict(
        half_len=Lh, length=2 * Lh, scale=np.concatenate(scale), modality=np.concatenate(modality),
        half_index=np.concatenate(half_index), begins=tuple(begins), half_scale=half,
    )
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return out


def joint_layout(patch_nums: Sequence[int]) -> dict:
    """Static description of the joint sequence: half_len, length, and per joint position its
    scale, modality (0 sat, 1 map) and index in its half; begins[k] = joint offset of scale k."""
    return _layout(tuple(int(p) for p in patch_nums))


def joint_mask(patch_nums: Sequence[int], within_scale: str = "group") -> np.ndarray:
    """(L, L) bool attention mask of the joint sequence (True = may attend)."""
    lay = joint_layout(patch_nums)
    return block_causal_mask(lay["scale"], q_group=lay["modality"], within_scale=within_scale)


def directed_mask(patch_nums: Sequence[int], within_scale: str = "group", lead: Optional[int] = None):
    """Mask of a directed (translation) row whose condition half is `lead` (SAT/MAP): as
    joint_mask, plus, inside each scale, the target half sees the condition half ("ordered",
    condition first). lead=None: joint_mask."""
    if lead is None or within_scale == "all":
        return joint_mask(patch_nums, within_scale)
    lay = joint_layout(patch_nums)
    group = lay["modality"] if lead == SAT else 1 - lay["modality"]
    return block_causal_mask(lay["scale"], q_group=group, within_scale="ordered")


def sos_pad(sos, length: int):
    """(B, first_l, C) start tokens zero-padded to (B, length, C)."""
    return jnp.concatenate([sos, jnp.zeros((sos.shape[0], length - sos.shape[1], sos.shape[2]), sos.dtype)], 1)


def to_joint(sat, mapp, patch_nums: Sequence[int]):
    """Two half sequences (B, Σpn², ...) -> the joint layout (B, 2Σpn², ...) (static slices)."""
    parts, b = [], 0
    for pn in patch_nums:
        n = pn * pn
        parts += [sat[:, b : b + n], mapp[:, b : b + n]]
        b += n
    return jnp.concatenate(parts, axis=1)


def from_joint(x, patch_nums: Sequence[int]):
    """Inverse of to_joint: (B, L, ...) -> (sat (B, Σpn², ...), map (B, Σpn², ...))."""
    sats, maps, b = [], [], 0
    for pn in patch_nums:
        n = pn * pn
        sats.append(x[:, 2 * b : 2 * b + n])
        maps.append(x[:, 2 * b + n : 2 * b + 2 * n])
        b += n
    return jnp.concatenate(sats, 1), jnp.concatenate(maps, 1)


def flatten_tokens(indices) -> jnp.ndarray:
    """List of K token maps (B, pn, pn) (or (B, pn²)) -> (B, Σpn²) int32."""
    B = indices[0].shape[0]
    return jnp.concatenate([jnp.asarray(i).reshape(B, -1) for i in indices], 1).astype(jnp.int32)


def split_tokens(flat, patch_nums: Sequence[int]) -> list:
    """(B, Σpn²) -> list of K token maps (B, pn, pn)."""
    out, b = [], 0
    for pn in patch_nums:
        out.append(flat[:, b : b + pn * pn].reshape(-1, pn, pn))
        b += pn * pn
    return out


# ----------------------------------------------------------------------------- the module


class EarthMapper(nn.Module):
    """GJSA transformer (see module doc for the layout and the parameters)."""

    depth: int
    embed_dim: int
    num_heads: int
    patch_nums: tuple
    vocab_size: int
    cvae: int
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    shared_aln: bool = False
    within_scale: str = "group"
    geo_num_freqs: int = 16
    geo_hidden: int = 0
    si_layer: int = 0  # 1-based block whose output SI aligns; 0 = no SI head
    si_dim: int = 768
    si_hidden: int = 2048
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    init_std: float = 0.02
    dtype: Any = jnp.float32
    attention: Optional[str] = "xla"
    scan_layers: bool = False
    remat: str = "none"

    @property
    def half_len(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    def setup(self):
        C, tn = self.embed_dim, var_trunc_normal(self.init_std)
        self.word_embed = nn.Dense(C, kernel_init=tn, name="word_embed")
        self.geo = GeoEmbed(C, self.geo_num_freqs, self.geo_hidden or None, self.init_std, name="geo")
        self.pos_start = self.param("pos_start", tn, (self.first_l, C), jnp.float32)
        self.pos_1LC = self.param("pos_1LC", tn, (self.half_len, C), jnp.float32)
        self.lvl_embed = nn.Embed(len(self.patch_nums), C, embedding_init=tn, name="lvl_embed")
        self.modality_embed = self.param("modality_embed", nn.initializers.zeros, (2, C), jnp.float32)
        self.cond_null = self.param("cond_null", tn, (C,), jnp.float32)
        # directed rows: the condition half also sees its own current-scale token ids
        self.cond_token_embed = nn.Embed(self.vocab_size, C, embedding_init=tn, name="cond_token_embed")
        self.lead_embed = self.param("lead_embed", nn.initializers.zeros, (C,), jnp.float32)
        if self.shared_aln:
            self.shared_ada_lin = nn.Dense(6 * C, dtype=self.dtype, kernel_init=tn, name="shared_ada_lin")
        self.blocks = BlockStack(
            depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            attn_l2_norm=self.attn_l2_norm, shared_aln=self.shared_aln, norm_eps=self.norm_eps,
            drop_path_rate=self.drop_path_rate, dtype=self.dtype, implementation=self.attention,
            init_std=self.init_std, init_adaln=self.init_adaln,
            init_adaln_gamma=self.init_adaln_gamma, scan_layers=self.scan_layers,
            remat=self.remat, name="blocks",
        )
        self.head_nm = AdaLNBeforeHead(self.norm_eps, self.init_std, self.init_adaln, name="head_nm")
        self.head = LogitsHead(self.vocab_size, dtype=self.dtype, init_std=self.init_std,
                               init_scale=self.init_head, name="head")
        if self.si_layer:
            self.si_head = semantic.AlignmentMLP(self.si_hidden, self.si_dim, name="si_head")

    # -- embeddings (each method is also a sampler building block) ---------------------------

    def condition(self, coords, drop=None):
        """c_g (B, C) of (lat, lon) coordinates; NaN rows or drop=True -> the null."""
        return self.geo(coords, drop)

    def half_embeddings(self, begin: int, end: int, modality: int):
        """lvl + pos + modality embeddings of half positions [begin, end) (static), (n, C)."""
        lvl = jnp.asarray(scale_ids(self.patch_nums)[begin:end])
        return self.lvl_embed(lvl) + self.pos_1LC[begin:end] + self.modality_embed[modality]

    def _lead(self, ids, lead):
        """Where lead (B,): the embedding of a condition half's current-scale token ids (B, n)
        plus the lead embedding; 0 elsewhere. ids None -> None."""
        if ids is None:
            return None
        add = self.cond_token_embed(ids) + self.lead_embed[None, None]
        return jnp.where(lead[:, None, None], add, 0.0)

    def start_tokens(self, cond, ids_sat=None, ids_map=None, lead_sat=None, lead_map=None):
        """Scale-0 tokens of both halves, joint layout (B, 2·first_l, C). ids_*: a leading
        (condition) half's scale-0 token ids (B, first_l), used where lead_*."""
        sos = cond[:, None, :] + self.pos_start[None]
        n = self.first_l
        out = []
        for m, ids, lead in ((SAT, ids_sat, lead_sat), (MAP, ids_map, lead_map)):
            x = sos + self.half_embeddings(0, n, m)[None]
            if ids is not None:
                x = x + self._lead(ids, lead)
            out.append(x)
        return jnp.concatenate(out, 1)

    def scale_tokens(self, x_sat, x_map, si: int, null_sat=None, null_map=None, lead_sat=None,
                     lead_map=None, ids_sat=None, ids_map=None):
        """Scale-si (>= 1) tokens, joint layout (B, 2pn², C), from each half's input features
        (B, pn², Cvae); null_*: (B,) bool, that half's input becomes the learned null; ids_*
        with lead_*: a leading half's own scale-si token ids (B, pn²)."""
        pn = self.patch_nums[si]
        begin = sum(p * p for p in self.patch_nums[:si])
        out = []
        for m, x, null, lead, ids in ((SAT, x_sat, null_sat, lead_sat, ids_sat),
                                      (MAP, x_map, null_map, lead_map, ids_map)):
            w = self.word_embed(x.astype(jnp.float32))
            if ids is not None:
                w = w + self._lead(ids, lead)
            if null is not None:
                w = jnp.where(null[:, None, None], self.cond_null[None, None], w)
            out.append(w + self.half_embeddings(begin, begin + pn * pn, m)[None])
        return jnp.concatenate(out, 1)

    def embed_sequence(self, cond, tf_sat, tf_map, null_sat=None, null_map=None, ids_sat=None,
                       ids_map=None, lead_sat=None, lead_map=None):
        """Teacher-forced input (B, L, C) from c_g and both halves' VAR inputs (B, Σpn²-1, Cvae);
        a leading half (lead_*) also gets the embedding of its own tokens ids_* (B, Σpn²)."""
        n = self.first_l
        sos = cond[:, None, :] + self.pos_start[None]
        halves = []
        for m, tf, null, ids, lead in ((SAT, tf_sat, null_sat, ids_sat, lead_sat),
                                       (MAP, tf_map, null_map, ids_map, lead_map)):
            w = jnp.concatenate([jnp.zeros_like(sos), self.word_embed(tf.astype(jnp.float32))], 1)
            if ids is not None:
                w = w + self._lead(ids, lead)
            if null is not None:
                later = jnp.arange(self.half_len) >= n
                w = jnp.where(null[:, None, None] & later[None, :, None], self.cond_null[None, None], w)
            halves.append(sos_pad(sos, self.half_len) + w + self.half_embeddings(0, self.half_len, m)[None])
        return to_joint(halves[0], halves[1], self.patch_nums)

    # -- transformer -------------------------------------------------------------------------

    def shared_condition(self, cond):
        if not self.shared_aln:
            return cond
        out = self.shared_ada_lin(nn.silu(cond.astype(self.dtype)))
        return out.astype(jnp.float32).reshape(cond.shape[0], 6, self.embed_dim)

    def transformer(self, x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                    capture_layer=None):
        return self.blocks(x, self.shared_condition(cond), mask, caches, cache_offset,
                           deterministic, capture_layer)

    def logits_from_hidden(self, h, cond):
        return self.head(self.head_nm(h.astype(jnp.float32), cond))

    def align(self, h):
        """SI alignment MLP on captured hidden states (..., C) -> (..., si_dim)."""
        return self.si_head(h)

    def __call__(self, coords, tf_sat, tf_map, *, drop_geo=None, null_sat=None, null_map=None,
                 ids_sat=None, ids_map=None, direction=None, deterministic: bool = True):
        """Teacher-forced pass: (logits (B, L, V) fp32, SI predictions (B, L, si_dim) or None).

        direction: optional (B,) int, -1 = joint row, SAT/MAP = a translation row whose
        condition half is that modality: its inputs also carry its own tokens ids_* (B, Σpn²)
        (unless nulled) and the row uses directed_mask."""
        cond = self.condition(coords, drop_geo)
        if self.is_initializing():  # create the directed-row parameters whatever the inputs
            self._lead(jnp.zeros((1, 1), jnp.int32), jnp.zeros((1,), bool))
        lead = [None, None]
        if direction is not None:
            for m, null in ((SAT, null_sat), (MAP, null_map)):
                lead[m] = direction == m
                if null is not None:
                    lead[m] = lead[m] & ~null
        x = self.embed_sequence(cond, tf_sat, tf_map, null_sat, null_map, ids_sat, ids_map,
                                lead[0], lead[1])
        mask = jnp.asarray(joint_mask(self.patch_nums, self.within_scale))[None, None]
        if direction is not None and self.within_scale != "all":
            masks = jnp.asarray(np.stack([directed_mask(self.patch_nums, self.within_scale, d)
                                          for d in (SAT, MAP, None)]))
            mask = masks[jnp.where(direction < 0, 2, direction)][:, None]
        capture = self.si_layer - 1 if self.si_layer else None
        h, _, captured = self.transformer(x, cond, mask, deterministic=deterministic, capture_layer=capture)
        logits = self.logits_from_hidden(h, cond)
        return logits, (self.align(captured) if self.si_layer else None)


# ----------------------------------------------------------------------------- config / build


def model_config(name: str = "d16", **overrides) -> ml_collections.ConfigDict:
    """EarthMapper model config: VAR's shapes for `name` (tiny, d16, d20, d24, d30) plus the
    GJSA, geo and SI fields (see configs/earthmapper.py for the documented list)."""
    c = var_config(name if name != "tiny" else "tiny")
    del c["num_classes"], c["cond_drop_rate"]
    c.mode = "earthmapper"
    c.within_scale = "group"       # "group" (paper, default) | "all" | "ordered"
    c.geo_num_freqs = 16           # SinEmbed frequencies 2^0 .. 2^15 cycles per 360°
    c.geo_hidden = 0               # geo MLP hidden width; 0 = embed_dim
    c.coord_drop_rate = 0.1        # coordinates -> learned null (CFG), as VAR's label dropout
    c.cond_drop_rate = 0.1         # one modality's inputs -> learned null (condition CFG terms)
    c.directed_rate = 0.5          # share of rows trained as translations (0 = the paper's pure joint model)
    c.si_layer = max(1, c.depth // 3) if name != "tiny" else 1  # 1-based; 0 = no SI
    c.si_weight = semantic.DEFAULT_WEIGHT
    c.si_loss = "mse"              # the paper's squared error; "cosine" = REPA's
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
    c.si_dim = dinov2_variants()[c.si_encoder]["embed_dim"]
    check_config(c)
    return c


def dinov2_variants():
    from earthmapper_jax.models.dinov2 import VARIANTS

    return VARIANTS


def check_config(c) -> None:
    """One-line InputError for settings that cannot form an EarthMapper model."""
    var_check_config(c)  # width/heads, dtype, attention kernels, remat, patch_nums
    if c.within_scale not in WITHIN_SCALE_CHOICES:
        raise InputError(f"within_scale={c.within_scale!r}; expected one of {WITHIN_SCALE_CHOICES}")
    if not 0 <= int(c.si_layer) <= int(c.depth):
        raise InputError(f"si_layer={c.si_layer}; expected 0 (off) .. depth={c.depth}")
    if c.si_encoder not in dinov2_variants():
        raise InputError(f"si_encoder={c.si_encoder!r}; expected one of {sorted(dinov2_variants())}")
    if c.si_loss not in semantic.SI_LOSSES:
        raise InputError(f"si_loss={c.si_loss!r}; expected one of {semantic.SI_LOSSES}")
    for key in ("coord_drop_rate", "cond_drop_rate"):
        if not 0.0 <= float(c.get(key, 0.0)) < 1.0:
            raise InputError(f"{key}={c.get(key)}; expected a probability in [0, 1)")
    if not 0.0 <= float(c.get("directed_rate", 0.0)) <= 1.0:
        raise InputError(f"directed_rate={c.get('directed_rate')}; expected a probability in [0, 1]")


def build(c, **overrides) -> EarthMapper:
    """The Linen module of a model config (ConfigDict or dict)."""
    c = ml_collections.ConfigDict(c.to_dict() if hasattr(c, "to_dict") else dict(c))
    for k, v in overrides.items():
        c[k] = v
    check_config(c)
    return EarthMapper(
        depth=int(c.depth), embed_dim=int(c.embed_dim), num_heads=int(c.num_heads),
        patch_nums=tuple(int(p) for p in c.patch_nums), vocab_size=int(c.vocab_size),
        cvae=int(c.cvae), mlp_ratio=float(c.mlp_ratio), drop_path_rate=float(c.drop_path_rate),
        norm_eps=float(c.norm_eps), attn_l2_norm=bool(c.attn_l2_norm),
        shared_aln=bool(c.shared_aln), within_scale=c.within_scale,
        geo_num_freqs=int(c.geo_num_freqs), geo_hidden=int(c.geo_hidden),
        si_layer=int(c.si_layer), si_dim=int(c.si_dim), si_hidden=int(c.si_hidden),
        init_adaln=float(c.init_adaln), init_adaln_gamma=float(c.init_adaln_gamma),
        init_head=float(c.init_head), init_std=resolved_init_std(c), dtype=DTYPES[c.dtype],
        attention=c.attention, scan_layers=bool(c.scan_layers), remat=c.remat,
    )


def _model_config(config):
    """The model ConfigDict of a training config (config.model) or of a model config itself."""
    c = config["model"] if "model" in config else config
    return c if isinstance(c, ml_collections.ConfigDict) else ml_collections.ConfigDict(c)


def _dummy_inputs(module: EarthMapper):
    Lh = module.half_len
    coords = jnp.zeros((1, 2), jnp.float32)
    tf = jnp.zeros((1, Lh - module.first_l, module.cvae), jnp.float32)
    return coords, tf, tf


# Parameters that carry over from a VAR model directory unchanged.
VAR_SHARED = ("word_embed", "pos_start", "pos_1LC", "lvl_embed", "shared_ada_lin", "blocks",
              "head_nm", "head")


def init_params(config, rng, var_init_dir=None, *, boxed=False):
    """Fresh params (see module doc); from a converted VAR directory when one is given.
    Plain arrays, or with boxed=True the `nn.LogicallyPartitioned` boxes of `module.init`
    (the training task's params: the trainer shards by their logical names)."""
    mc = _model_config(config)
    module = build(mc)
    boxes = jax.jit(module.init)(rng, *_dummy_inputs(module))["params"]
    params = nn.meta.unbox(boxes)
    var_init_dir = var_init_dir or mc.get("var_init", None)
    if var_init_dir:
        params = init_from_var(params, mc, var_init_dir)
    if boxed:
        params = jax.tree.map(lambda b, p: b.replace_boxed(p) if _is_box(b) else p, boxes, params,
                              is_leaf=_is_box)
    return params


def _is_box(x):
    return isinstance(x, nn.meta.AxisMetadata)


def init_from_var(params, mc, var_dir):
    """Copies the shared parts of a VAR model directory into fresh EarthMapper params."""
    from earthmapper_jax.io.checkpoint import load_params
    from earthmapper_jax.models.blocks import stack_block_params, unstack_block_params

    var_params, var_cfg = load_params(var_dir, expect_kind="var")
    for key in ("depth", "embed_dim", "num_heads", "vocab_size", "cvae", "attn_l2_norm", "shared_aln"):
        if key in var_cfg and var_cfg[key] != mc[key]:
            raise CheckpointError(
                f"{var_dir}: VAR {key}={var_cfg[key]} but the EarthMapper config has {mc[key]}")
    if tuple(var_cfg["patch_nums"]) != tuple(mc.patch_nums):
        raise CheckpointError(f"{var_dir}: VAR patch_nums {list(var_cfg['patch_nums'])} != "
                              f"the EarthMapper config's {list(mc.patch_nums)}")
    var_scanned = bool(var_cfg.get("scan_layers", False))
    if var_scanned != bool(mc.scan_layers):
        convert = stack_block_params if mc.scan_layers else unstack_block_params
        var_params = convert(var_params, int(mc.depth))
    out = dict(jax.tree.map(jnp.asarray, dict(params)))
    for key in VAR_SHARED:
        if key in var_params:
            if jax.tree.structure(var_params[key]) != jax.tree.structure(out[key]):
                raise CheckpointError(f"{var_dir}: VAR parameter group {key!r} has another layout")
            out[key] = jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), var_params[key], out[key])
    null = jnp.asarray(var_params["class_emb"]["embedding"][-1], jnp.float32)
    geo = dict(out["geo"])
    geo["null"] = null
    geo["mlp_out"] = dict(geo["mlp_out"], bias=null)
    out["geo"] = geo
    return out


# ----------------------------------------------------------------------------- loss


@functools.lru_cache(maxsize=8)
def _tokenizer_module_at(directory: str):
    from earthmapper_jax.io.checkpoint import read_config
    from earthmapper_jax.tokenizer import model as tok_model

    return tok_model.build(read_config(directory, expect_kind="tokenizer")["config"])


def _tokenizer_module(mc):
    """The frozen tokenizer's Linen module: from config.model.tokenizer_config (a dict) when
    present, else from the config.json in config.model.tokenizer_dir (read once)."""
    from earthmapper_jax.tokenizer import model as tok_model

    if mc.get("tokenizer_config", None):
        return tok_model.build(mc.tokenizer_config.to_dict() if hasattr(mc.tokenizer_config, "to_dict")
                               else dict(mc.tokenizer_config))
    if not mc.get("tokenizer_dir", None):
        raise InputError("config.model.tokenizer_dir is not set; expected a tokenizer directory")
    return _tokenizer_module_at(str(mc.tokenizer_dir))


def load_frozen(config) -> dict:
    """Frozen tokenizer (and DINOv2 when SI targets are computed on the fly) params."""
    from earthmapper_jax.io.checkpoint import load_params
    from earthmapper_jax.models.dinov2 import load_dinov2

    mc = _model_config(config)
    if not mc.get("tokenizer_dir", None):
        raise InputError("config.model.tokenizer_dir is not set; expected a tokenizer directory")
    tok_params, _ = load_params(mc.tokenizer_dir, expect_kind="tokenizer")
    frozen = {"tokenizer": tok_params, "dinov2": None}
    if int(mc.si_layer) and float(mc.si_weight) > 0 and mc.get("si_dinov2", None):
        dino, dino_params = load_dinov2(mc.si_dinov2)
        want = dinov2_variants()[mc.si_encoder]
        got = {k: getattr(dino, k) for k in want}
        if got != want:
            raise CheckpointError(f"{mc.si_dinov2}: a DINOv2 with {got}, but si_encoder="
                                  f"{mc.si_encoder!r} is {want}")
        frozen["dinov2"] = dino_params
    return frozen


def _tokens_and_inputs(mc, batch, frozen):
    """Per modality (flat tokens (B, Σpn²), VAR inputs (B, Σpn²-1, Cvae))."""
    from earthmapper_jax.tokenizer.model import VQVAE

    if frozen is None or frozen.get("tokenizer") is None:
        raise InputError("loss_fn needs frozen={'tokenizer': params, ...} (see load_frozen)")
    tok = _tokenizer_module(mc)
    tp = {"params": frozen["tokenizer"]}
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
        out.append((flat, tf))
    return out


def _si_targets(mc, batch, frozen):
    """SI targets per half (B, Σpn², D) for sat and map."""
    out = []
    for m in MODALITIES:
        if f"{m}_sem" in batch:
            grid = jnp.asarray(batch[f"{m}_sem"], jnp.float32)
        else:
            if frozen is None or frozen.get("dinov2") is None or f"{m}_image" not in batch:
                raise InputError(
                    f"SI is on (si_weight={mc.si_weight}) but the batch has no {m}_sem grid and "
                    "no DINOv2 params/image to compute it; set config.model.si_dinov2 or "
                    "precompute the targets (semantic.precompute_grids)")
            from earthmapper_jax.models.dinov2 import DinoV2

            dino = DinoV2(**dinov2_variants()[mc.si_encoder])
            grid = semantic.dinov2_grid(dino, frozen["dinov2"], batch[f"{m}_image"], int(mc.si_image_size))
        out.append(semantic.targets_from_grid(grid, mc.patch_nums))
    return out


def loss_fn(params, batch, rng, config, frozen=None):
    """CE over both modalities (+ σ·SI); see module doc for the batch and the metrics."""
    mc = _model_config(config)
    module = build(mc)
    pn = tuple(int(p) for p in mc.patch_nums)
    K = len(pn)
    directed_rate = float(mc.get("directed_rate", 0.0))
    (sat_flat, tf_sat), (map_flat, tf_map) = _tokens_and_inputs(mc, batch, frozen)
    B = sat_flat.shape[0]
    coords = jnp.asarray(batch["coords"], jnp.float32)

    r_geo, r_cond, r_which, r_dir, r_lead, r_drop = jax.random.split(rng, 6)
    drop_geo = coord_dropout(r_geo, B, float(mc.coord_drop_rate))
    drop_any = coord_dropout(r_cond, B, float(mc.cond_drop_rate))
    which = jax.random.bernoulli(r_which, 0.5, (B,))
    null_sat, null_map = drop_any & ~which, drop_any & which
    direction = None
    skip_sat, skip_map = null_sat, null_map  # halves without a loss
    if directed_rate > 0:  # translation rows: the condition half shows its own tokens (no loss)
        directed = coord_dropout(r_dir, B, directed_rate)
        cond_m = jax.random.bernoulli(r_lead, 0.5, (B,)).astype(jnp.int32)  # SAT=0 / MAP=1
        direction = jnp.where(directed, cond_m, -1)
        skip_sat, skip_map = skip_sat | (direction == SAT), skip_map | (direction == MAP)

    logits, si_pred = module.apply(
        {"params": params}, coords, tf_sat, tf_map, drop_geo=drop_geo, null_sat=null_sat,
        null_map=null_map, ids_sat=sat_flat if direction is not None else None,
        ids_map=map_flat if direction is not None else None, direction=direction,
        deterministic=False, rngs={"dropout": r_drop})

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

    every = np.ones(lay["length"], bool)
    ce = masked_mean(nll, every)
    metrics = {"ce": ce}
    for m, name in enumerate(MODALITIES):
        sel = lay["modality"] == m
        metrics[f"ce_{name}"] = masked_mean(nll, sel)
        metrics[f"acc_{name}"] = masked_mean(correct, sel)
    for k in range(K):
        sel = lay["scale"] == k
        metrics[f"ce_scale_{k}"] = masked_mean(nll, sel)
        metrics[f"acc_scale_{k}"] = masked_mean(correct, sel)

    loss = ce
    if int(mc.si_layer) and float(mc.si_weight) > 0:
        t_sat, t_map = _si_targets(mc, batch, frozen)
        target = to_joint(t_sat, t_map, pn)
        per_tok = semantic.per_token_loss(si_pred, target, mc.si_loss)
        si, _ = semantic.scale_mean(per_tok, lay["scale"], K, keep)
        metrics["si_loss"] = si
        loss = loss + float(mc.si_weight) * si
    metrics["loss"] = loss
    return loss, metrics


def flops_per_example(config) -> float:
    """Training FLOPs per example (forward + backward, transformer only)."""
    mc = _model_config(config)
    L = 2 * sum(int(p) ** 2 for p in mc.patch_nums)
    C, d, V = int(mc.embed_dim), int(mc.depth), int(mc.vocab_size)
    return 3.0 * L * (2 * (12 * C * C * d + C * V) + 4 * L * C * d)
