"""The transformer VAR and EarthMapper share: embeddings, AdaLN blocks, head, and their config.

Both models are this backbone plus their own conditioning and sequence layout: VAR
(models/var.py) adds a class table and label dropout; EarthMapper (models/earthmapper.py) adds
geographic conditioning and the joint satellite/map layout. Subclassing `Backbone` keeps the
parameters at the top of each model's tree, exactly where VAR's released checkpoints put them
(models/convert_var.py maps them one to one):

    word_embed/{kernel (Cvae, C), bias}, pos_start (first_l, C), pos_1LC (Σpn², C),
    lvl_embed/embedding (K, C), [shared_ada_lin/{kernel (C, 6C), bias}],
    blocks/layer_i/... (or blocks/layers/block/... with scan_layers),
    head_nm/ada_lin/{kernel (C, 2C), bias}, head/{kernel (C, V), bias}

    base_config(name) -> ConfigDict      VAR's shapes for name (d16 .. d36, tiny) + execution
    check_config(c)                      InputError for impossible shared settings
    module_fields(c) -> dict             the Backbone fields of a config (for build)
    Backbone methods: level_position(begin, end), shared_condition(cond),
        transformer(x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                    capture_layer=None) -> (h, caches, captured),
        logits_from_hidden(h, cond) -> (B, n, V) fp32

Embedding parameters carry their logical axis names (train/sharding.py maps names to the mesh).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from earthmapper_jax.errors import InputError
from earthmapper_jax.models.attention import IMPLEMENTATIONS, var_trunc_normal
from earthmapper_jax.models.blocks import REMAT_POLICIES, AdaLNBeforeHead, BlockStack, LogitsHead
from earthmapper_jax.scales import scale_ids, seq_len

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DEPTHS = {"d16": 16, "d20": 20, "d24": 24, "d30": 30, "d36": 36}
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
TINY_PATCH_NUMS = (1, 2, 3, 4, 6, 8)  # the 128 px tiny tokenizer of the tests


def logical(init, *names):
    """An initializer whose parameter carries logical axis names (see train/sharding.py)."""
    return nn.with_logical_partitioning(init, names)


def base_config(name: str) -> ml_collections.ConfigDict:
    """Shapes as VAR's build_vae_var builds depth `name`, and the execution settings."""
    if name == "tiny":
        depth, patch_nums, vocab, cvae, shared = 2, TINY_PATCH_NUMS, 512, 8, False
    elif name in DEPTHS:
        depth = DEPTHS[name]
        shared = name == "d36"
        patch_nums = PATCH_NUMS_512 if shared else PATCH_NUMS_256
        vocab, cvae = 4096, 32
    else:
        raise InputError(f"unknown model size {name!r}; expected one of {sorted(DEPTHS) + ['tiny']}")
    c = ml_collections.ConfigDict()
    c.depth = depth
    c.embed_dim = 64 * depth
    c.num_heads = depth
    c.mlp_ratio = 4.0
    c.drop_path_rate = 0.1 * depth / 24
    c.norm_eps = 1e-6
    c.attn_l2_norm = True
    c.shared_aln = shared
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
    return c


def check_config(c) -> None:
    """One-line InputError for shared settings that cannot form a transformer."""
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


def as_config(c, overrides) -> ml_collections.ConfigDict:
    """A private ConfigDict copy of a config (ConfigDict or dict) with `overrides` applied."""
    c = ml_collections.ConfigDict(c.to_dict() if hasattr(c, "to_dict") else dict(c))
    for k, v in overrides.items():
        c[k] = v
    return c


def module_fields(c) -> dict:
    """The Backbone fields of a (checked) config."""
    return dict(
        depth=int(c.depth), embed_dim=int(c.embed_dim), num_heads=int(c.num_heads),
        patch_nums=tuple(int(p) for p in c.patch_nums), vocab_size=int(c.vocab_size),
        cvae=int(c.cvae), mlp_ratio=float(c.mlp_ratio), drop_path_rate=float(c.drop_path_rate),
        norm_eps=float(c.norm_eps), attn_l2_norm=bool(c.attn_l2_norm),
        shared_aln=bool(c.shared_aln), init_adaln=float(c.init_adaln),
        init_adaln_gamma=float(c.init_adaln_gamma), init_head=float(c.init_head),
        init_std=c.init_std if c.init_std >= 0 else math.sqrt(1.0 / (3 * c.embed_dim)),
        dtype=DTYPES[c.dtype], attention=c.attention, scan_layers=bool(c.scan_layers),
        remat=c.remat,
    )


class Backbone(nn.Module):
    """Embeddings, AdaLN transformer blocks and head (see module doc). A model subclasses it,
    calls `super().setup()` first and adds its own parameters."""

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
        """Σpn²: VAR's sequence, one half of EarthMapper's."""
        return seq_len(self.patch_nums)

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    def setup(self):
        # Creation order matters for the initial values: pos_start and pos_1LC draw the first
        # two numbers of this module's "params" stream, as before the backbone was shared.
        C, tn = self.embed_dim, var_trunc_normal(self.init_std)
        self.word_embed = nn.Dense(C, kernel_init=logical(tn, None, "embed"), name="word_embed")
        self.pos_start = self.param("pos_start", logical(tn, None, "embed"), (self.first_l, C),
                                    jnp.float32)
        self.pos_1LC = self.param("pos_1LC", logical(tn, None, "embed"), (self.seq_len, C),
                                  jnp.float32)
        self.lvl_embed = nn.Embed(len(self.patch_nums), C,
                                  embedding_init=logical(tn, None, "embed"), name="lvl_embed")
        if self.shared_aln:
            self.shared_ada_lin = nn.Dense(6 * C, dtype=self.dtype, kernel_init=logical(tn, "embed", "adaln"),
                                           name="shared_ada_lin")
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

    def level_position(self, begin: int, end: int):
        """lvl_embed + pos_1LC for (half) sequence positions [begin, end) (static), (n, C)."""
        lvl = jnp.asarray(scale_ids(self.patch_nums)[begin:end])
        return self.lvl_embed(lvl) + self.pos_1LC[begin:end]

    def shared_condition(self, cond):
        """What the blocks receive as condition: cond itself, or the shared AdaLN (B, 6, C)."""
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
