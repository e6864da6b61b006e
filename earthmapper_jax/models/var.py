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
      transformer(...), logits_from_hidden(h, cond): the shared backbone's (models/backbone.py)

    Parameter tree (fp32): the backbone's (models/backbone.py) plus class_emb/embedding
    (num_classes + 1, C).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import backbone
from earthmapper_jax.models.attention import var_trunc_normal
from earthmapper_jax.models.backbone import Backbone, logical
from earthmapper_jax.models.masks import var_mask
from earthmapper_jax.scales import scale_offsets


def var_config(name: str = "d16", **overrides) -> ml_collections.ConfigDict:
    """Model config as VAR's build_vae_var would build it for depth `name` (see configs/var.py)."""
    c = backbone.base_config(name)
    c.mode = "var"
    c.num_classes = 10 if name == "tiny" else 1000
    c.cond_drop_rate = 0.1  # label dropout (a label becomes the null class), VAR's CFG training
    for k, v in overrides.items():
        c[k] = v
    check_config(c)
    return c


def check_config(c) -> None:
    """One-line InputError for settings that cannot form a VAR model."""
    backbone.check_config(c)
    if not 0.0 <= float(c.get("cond_drop_rate", 0.0)) < 1.0:
        raise InputError(f"cond_drop_rate={c.get('cond_drop_rate')}; expected a probability in [0, 1)")


class VAR(Backbone):
    """VAR's class-conditional transformer (see module doc)."""

    num_classes: int = 1000
    cond_drop_rate: float = 0.1

    def setup(self):
        super().setup()
        tn = var_trunc_normal(self.init_std)
        self.class_emb = nn.Embed(self.num_classes + 1, self.embed_dim,
                                  embedding_init=logical(tn, "vocab", "embed"), name="class_emb")

    def class_embedding(self, labels):
        return self.class_emb(labels)

    def first_tokens(self, cond):
        sos = cond[:, None, :] + self.pos_start[None]
        return sos + self.level_position(0, self.first_l)[None]

    def scale_tokens(self, x_cv, si: int):
        begin, end = scale_offsets(self.patch_nums)[si]
        return self.word_embed(x_cv.astype(jnp.float32)) + self.level_position(begin, end)[None]

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
    c = backbone.as_config(c, overrides)
    check_config(c)
    return VAR(**backbone.module_fields(c), num_classes=int(c.num_classes),
               cond_drop_rate=float(c.cond_drop_rate))


def init_params(c, rng):
    """Fresh fp32 parameters with VAR's init_weights (for training from scratch), plain arrays
    (`module.init` boxes them with their logical axis names)."""
    module = build(c)
    labels = jnp.zeros((1,), jnp.int32)
    x = jnp.zeros((1, module.seq_len - module.first_l, module.cvae), jnp.float32)
    return nn.meta.unbox(jax.jit(module.init)(rng, labels, x)["params"])


def forward(module: VAR, params, labels, x_BLCv_wo_first_l, *, deterministic=True, rngs=None):
    """Teacher-forced logits (B, L, V), fp32."""
    return module.apply({"params": params}, labels, x_BLCv_wo_first_l, deterministic, rngs=rngs)


def param_count(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
