"""Class-conditional VAR (next-scale prediction) in Flax Linen, with VAR's exact semantics.

Public API (stable):

    var_config(name="d16" | "d20" | "d24" | "d30" | "d36" | "tiny", **overrides) -> ConfigDict
    check_config(config)                       raises InputError for impossible settings
    build(config) -> VAR                       the Linen module (pure-functional init/apply)
    init_params(config, rng) -> params         VAR's init_weights, fp32
    forward(module, params, labels, x, ...)    == module.apply(...); teacher-forced logits

    VAR module (fields = config entries, see var_config):
      __call__(labels (B,), x_BLCv_wo_first_l (B, L - first_l, Cvae), deterministic=True)
          -> logits (B, L, V) fp32. With deterministic=False: VAR's label dropout (a label
          becomes the null class num_classes with prob cond_drop_rate, rng "dropout") and
          drop-path. (VAR also drops labels in eval; here eval is deterministic.)
      Pieces for samplers (call with module.apply(..., method=VAR.<name>)):
      class_embedding(labels) -> cond (B, C)      labels in [0, num_classes]; num_classes = null
      first_tokens(cond) -> (B, first_l, C)       sos + pos_start + level/position embeddings
      scale_tokens(x_Cv (B, pn*pn, Cvae), si) -> (B, pn*pn, C)   word_embed + embeddings of scale si
      transformer(x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                  capture_layer=None) -> (h, caches, captured)    (shared AdaLN applied here)
      logits_from_hidden(h, cond) -> (B, n, V) fp32               head_nm + head

    Parameter tree (fp32): word_embed/{kernel (Cvae, C), bias}, class_emb/embedding
    (num_classes + 1, C), pos_start (first_l, C), pos_1LC (L, C), lvl_embed/embedding (K, C),
    [shared_ada_lin/{kernel (C, 6C), bias}], blocks/layer_i/... (or blocks/layers/block/... with
    scan_layers), head_nm/ada_lin/{kernel (C, 2C), bias}, head/{kernel (C, V), bias}.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models.attention import IMPLEMENTATIONS, var_trunc_normal
from earthmapper_jax.models.blocks import REMAT_POLICIES, AdaLNBeforeHead, BlockStack, LogitsHead
from earthmapper_jax.models.masks import scale_ids, scale_offsets, var_mask

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DEPTHS = {"d16": 16, "d20": 20, "d24": 24, "d30": 30, "d36": 36}
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
TINY_PATCH_NUMS = (1, 2, 3, 4, 6, 8)  # the 128 px tiny tokenizer of the tests


def var_config(name: str = "d16", **overrides) -> ml_collections.ConfigDict:
    """Model config as VAR's build_vae_var would build it for depth `name` (see configs/var.py)."""
    if name == "tiny":
        depth, patch_nums, vocab, cvae, classes, shared = 2, TINY_PATCH_NUMS, 512, 8, 10, False
    elif name in DEPTHS:
        depth = DEPTHS[name]
        shared = name == "d36"
        patch_nums = PATCH_NUMS_512 if shared else PATCH_NUMS_256
        vocab, cvae, classes = 4096, 32, 1000
    else:
        raise InputError(f"unknown VAR config {name!r}; expected one of {sorted(DEPTHS) + ['tiny']}")
    c = ml_collections.ConfigDict()
    c.mode = "var"
    c.depth = depth
    c.embed_dim = 64 * depth
    c.num_heads = depth
    c.mlp_ratio = 4.0
    c.drop_path_rate = 0.1 * depth / 24
    c.norm_eps = 1e-6
    c.attn_l2_norm = True
    c.shared_aln = shared
    c.num_classes = classes
    c.cond_drop_rate = 0.1
    c.patch_nums = tuple(patch_nums)
    c.vocab_size = vocab
    c.cvae = cvae
    # VAR's init_weights arguments (init_std < 0: sqrt(1 / (3 C)))
    c.init_adaln = 0.5
    c.init_adaln_gamma = 1e-5
    c.init_head = 0.02
    c.init_std = -1.0
    # execution (not architecture): compute dtype, attention kernel, layer scan / remat
    c.dtype = "float32"
    c.attention = "auto"        # auto | xla | cudnn | einsum | None, the full-sequence pass
                                # (auto = cudnn on GPU with bf16/fp16, else xla)
    c.sample_attention = "xla"  # the same for cached sampling (few queries per step)
    c.scan_layers = False
    c.remat = "none"
    for k, v in overrides.items():
        c[k] = v
    check_config(c)
    return c


def check_config(c) -> None:
    """One-line InputError for settings that cannot form a VAR model."""
    if c.embed_dim % c.num_heads:
        raise InputError(f"embed_dim {c.embed_dim} is not a multiple of num_heads {c.num_heads}")
    if c.dtype not in DTYPES:
        raise InputError(f"dtype {c.dtype!r}; expected one of {sorted(DTYPES)}")
    for key in ("attention", "sample_attention"):
        if c.get(key) not in IMPLEMENTATIONS:
            raise InputError(f"{key}={c.get(key)!r}; expected one of {IMPLEMENTATIONS}")
    if c.remat not in REMAT_POLICIES:
        raise InputError(f"remat={c.remat!r}; expected one of {REMAT_POLICIES}")
    if not c.patch_nums or any(int(p) < 1 for p in c.patch_nums):
        raise InputError(f"patch_nums must be positive integers, got {list(c.patch_nums)}")


def resolved_init_std(c) -> float:
    return c.init_std if c.init_std >= 0 else math.sqrt(1.0 / (3 * c.embed_dim))


class VAR(nn.Module):
    """VAR's class-conditional transformer (see module doc)."""

    depth: int
    embed_dim: int
    num_heads: int
    patch_nums: tuple
    vocab_size: int
    cvae: int
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    shared_aln: bool = False
    cond_drop_rate: float = 0.1
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    init_std: float = 0.02
    dtype: Any = jnp.float32
    attention: Optional[str] = "auto"
    scan_layers: bool = False
    remat: str = "none"

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    def setup(self):
        C, tn = self.embed_dim, var_trunc_normal(self.init_std)
        self.word_embed = nn.Dense(C, kernel_init=tn, name="word_embed")
        self.class_emb = nn.Embed(self.num_classes + 1, C, embedding_init=tn, name="class_emb")
        self.pos_start = self.param("pos_start", tn, (self.first_l, C), jnp.float32)
        self.pos_1LC = self.param("pos_1LC", tn, (self.seq_len, C), jnp.float32)
        self.lvl_embed = nn.Embed(len(self.patch_nums), C, embedding_init=tn, name="lvl_embed")
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
        self.head = LogitsHead(
            self.vocab_size, dtype=self.dtype, init_std=self.init_std, init_scale=self.init_head,
            name="head",
        )

    # -- embeddings --------------------------------------------------------------------------

    def level_position(self, begin: int, end: int):
        """lvl_embed + pos_1LC for sequence positions [begin, end) (static), (end - begin, C)."""
        lvl = jnp.asarray(scale_ids(self.patch_nums)[begin:end])
        return self.lvl_embed(lvl) + self.pos_1LC[begin:end]

    def class_embedding(self, labels):
        return self.class_emb(labels)

    def first_tokens(self, cond):
        sos = cond[:, None, :] + self.pos_start[None]
        return sos + self.level_position(0, self.first_l)[None]

    def scale_tokens(self, x_cv, si: int):
        begin, end = scale_offsets(self.patch_nums)[si]
        return self.word_embed(x_cv.astype(jnp.float32)) + self.level_position(begin, end)[None]

    # -- transformer -------------------------------------------------------------------------

    def shared_condition(self, cond):
        """What the blocks receive as condition: cond itself, or the shared AdaLN (B, 6, C)."""
        if not self.shared_aln:
            return cond
        out = self.shared_ada_lin(nn.silu(cond.astype(self.dtype)))
        return out.astype(jnp.float32).reshape(cond.shape[0], 6, self.embed_dim)

    def transformer(self, x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                    capture_layer=None):
        return self.blocks(
            x, self.shared_condition(cond), mask, caches, cache_offset, deterministic, capture_layer
        )

    def logits_from_hidden(self, h, cond):
        return self.head(self.head_nm(h.astype(jnp.float32), cond))

    def __call__(self, labels, x_BLCv_wo_first_l, deterministic: bool = True):
        B = labels.shape[0]
        if not deterministic and self.cond_drop_rate > 0:
            drop = jax.random.uniform(self.make_rng("dropout"), (B,)) < self.cond_drop_rate
            labels = jnp.where(drop, self.num_classes, labels)
        cond = self.class_embedding(labels)
        sos = cond[:, None, :] + self.pos_start[None]
        words = self.word_embed(x_BLCv_wo_first_l.astype(jnp.float32))
        x = jnp.concatenate([sos, words], axis=1) + self.level_position(0, self.seq_len)[None]
        mask = jnp.asarray(var_mask(self.patch_nums))[None, None]
        h, _, _ = self.transformer(x, cond, mask, deterministic=deterministic)
        return self.logits_from_hidden(h, cond)


def build(c, **overrides) -> VAR:
    """The VAR module of a config (ConfigDict or dict); overrides replace execution fields."""
    c = ml_collections.ConfigDict(dict(c))
    for k, v in overrides.items():
        c[k] = v
    check_config(c)
    return VAR(
        depth=int(c.depth), embed_dim=int(c.embed_dim), num_heads=int(c.num_heads),
        patch_nums=tuple(int(p) for p in c.patch_nums), vocab_size=int(c.vocab_size),
        cvae=int(c.cvae), num_classes=int(c.num_classes), mlp_ratio=float(c.mlp_ratio),
        drop_path_rate=float(c.drop_path_rate), norm_eps=float(c.norm_eps),
        attn_l2_norm=bool(c.attn_l2_norm), shared_aln=bool(c.shared_aln),
        cond_drop_rate=float(c.cond_drop_rate), init_adaln=float(c.init_adaln),
        init_adaln_gamma=float(c.init_adaln_gamma), init_head=float(c.init_head),
        init_std=resolved_init_std(c), dtype=DTYPES[c.dtype], attention=c.attention,
        scan_layers=bool(c.scan_layers), remat=c.remat,
    )


def init_params(c, rng):
    """Fresh fp32 parameters with VAR's init_weights (for training from scratch), plain arrays
    (`module.init` boxes them with their logical axis names)."""
    module = build(c)
    L = sum(p * p for p in module.patch_nums)
    labels = jnp.zeros((1,), jnp.int32)
    x = jnp.zeros((1, L - module.first_l, module.cvae), jnp.float32)
    return nn.meta.unbox(jax.jit(module.init)(rng, labels, x)["params"])


def forward(module: VAR, params, labels, x_BLCv_wo_first_l, *, deterministic=True, rngs=None):
    """Teacher-forced logits (B, L, V), fp32."""
    return module.apply({"params": params}, labels, x_BLCv_wo_first_l, deterministic, rngs=rngs)


def param_count(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
