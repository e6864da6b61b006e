"""VAR's released transformer checkpoints (var_d16 ... var_d36.pth) -> this package's params.

Public API:

    var_state_dict_to_params(state_dict, patch_nums=None) -> (params, config)
        Maps every key of a VAR state_dict (numpy arrays) to the Flax tree of models/var.py,
        with shapes checked against the architecture the keys describe. Detected from the keys:
        depth (block count), width (pos_start), attn_l2_norm (blocks.0.attn.scale_mul_1H11
        present), shared_aln (shared_ada_lin.* present), num_classes (class_emb rows - 1),
        vocab (head rows), Cvae (word_embed columns), mlp_ratio (fc1 rows / width).
        Raises CheckpointError naming the key for any unused, missing or misshapen tensor.
    convert_var_checkpoint(src, dst, tokenizer_dir, *, copy_tokenizer=True, overwrite=False)
        Reads src with earthmapper_jax.io.pth.load_state_dict, checks it against the tokenizer
        (vocabulary, Cvae, sequence length), writes dst (kind "var") with the tokenizer copied to
        dst/tokenizer (or only referenced in meta["tokenizer"] with copy_tokenizer=False).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.checkpoint import read_config, save_params
from earthmapper_jax.io.files import atomic_dir
from earthmapper_jax.io.pth import load_state_dict
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.backbone import PATCH_NUMS_256, PATCH_NUMS_512, TINY_PATCH_NUMS
from earthmapper_jax.scales import scale_ids, seq_len

TOKENIZER_SUBDIR = "tokenizer"  # a model directory's own copy of its tokenizer


def _patch_nums_for_length(L: int):
    for pn in (PATCH_NUMS_256, PATCH_NUMS_512, TINY_PATCH_NUMS):
        if seq_len(pn) == L:
            return tuple(pn)
    raise CheckpointError(
        f"pos_1LC has {L} positions, which matches no known patch_nums; pass the tokenizer "
        "whose patch_nums this model was trained with")


def detect_config(sd: dict, patch_nums=None):
    """Architecture config of a VAR state_dict (see module doc)."""
    for key in ("pos_start", "pos_1LC", "class_emb.weight", "word_embed.weight", "head.weight",
                "lvl_embed.weight"):
        if key not in sd:
            raise CheckpointError(f"not a VAR transformer checkpoint: key {key!r} missing")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"blocks.* keys are not numbered 0..N-1 (found {sorted(blocks)[:5]}...)")
    depth = len(blocks)
    C = int(sd["pos_start"].shape[-1])
    L = int(sd["pos_1LC"].shape[1]) if sd["pos_1LC"].ndim == 3 else -1
    if patch_nums is None:
        patch_nums = _patch_nums_for_length(L)
    patch_nums = tuple(int(p) for p in patch_nums)
    if seq_len(patch_nums) != L:
        raise CheckpointError(
            f"pos_1LC has {L} positions but the tokenizer's patch_nums {list(patch_nums)} give "
            f"{seq_len(patch_nums)}: the checkpoint does not match this tokenizer")
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    shared = any(k.startswith("shared_ada_lin.") for k in sd)
    heads = int(sd["blocks.0.attn.scale_mul_1H11"].shape[1]) if l2 else max(C // 64, 1)
    fc1 = sd.get("blocks.0.ffn.fc1.weight")
    if fc1 is None:
        raise CheckpointError("key 'blocks.0.ffn.fc1.weight' missing")
    return var_lib.var_config(
        "d16",
        depth=depth, embed_dim=C, num_heads=heads, mlp_ratio=float(fc1.shape[0]) / C,
        drop_path_rate=0.1 * depth / 24, attn_l2_norm=l2, shared_aln=shared,
        num_classes=int(sd["class_emb.weight"].shape[0]) - 1, patch_nums=patch_nums,
        vocab_size=int(sd["head.weight"].shape[0]), cvae=int(sd["word_embed.weight"].shape[1]),
    )


def _mapping(cfg):
    """(var_key, flax_path, transform) for every tensor of the architecture."""
    T = lambda a: a.T  # noqa: E731 - Linear [out, in] -> Dense kernel [in, out]
    ident = lambda a: a  # noqa: E731
    squeeze0 = lambda a: a.reshape(a.shape[-2:]) if a.ndim == 3 else a  # noqa: E731
    m = [
        ("pos_start", ("pos_start",), squeeze0),
        ("pos_1LC", ("pos_1LC",), squeeze0),
        ("word_embed.weight", ("word_embed", "kernel"), T),
        ("word_embed.bias", ("word_embed", "bias"), ident),
        ("class_emb.weight", ("class_emb", "embedding"), ident),
        ("lvl_embed.weight", ("lvl_embed", "embedding"), ident),
        ("head_nm.ada_lin.1.weight", ("head_nm", "ada_lin", "kernel"), T),
        ("head_nm.ada_lin.1.bias", ("head_nm", "ada_lin", "bias"), ident),
        ("head.weight", ("head", "kernel"), T),
        ("head.bias", ("head", "bias"), ident),
    ]
    if cfg.shared_aln:
        m += [
            ("shared_ada_lin.1.weight", ("shared_ada_lin", "kernel"), T),
            ("shared_ada_lin.1.bias", ("shared_ada_lin", "bias"), ident),
        ]
    for i in range(cfg.depth):
        b, p = f"blocks.{i}.", ("blocks", f"layer_{i}")
        m += [
            (b + "attn.mat_qkv.weight", p + ("attn", "mat_qkv", "kernel"), T),
            (b + "attn.q_bias", p + ("attn", "q_bias"), ident),
            (b + "attn.v_bias", p + ("attn", "v_bias"), ident),
            (b + "attn.proj.weight", p + ("attn", "proj", "kernel"), T),
            (b + "attn.proj.bias", p + ("attn", "proj", "bias"), ident),
            (b + "ffn.fc1.weight", p + ("ffn", "fc1", "kernel"), T),
            (b + "ffn.fc1.bias", p + ("ffn", "fc1", "bias"), ident),
            (b + "ffn.fc2.weight", p + ("ffn", "fc2", "kernel"), T),
            (b + "ffn.fc2.bias", p + ("ffn", "fc2", "bias"), ident),
        ]
        if cfg.attn_l2_norm:
            m.append((b + "attn.scale_mul_1H11", p + ("attn", "scale_mul"), lambda a: a.reshape(-1)))
        if cfg.shared_aln:
            m.append((b + "ada_gss", p + ("ada_gss",), lambda a: a.reshape(a.shape[-2:])))
        else:
            m += [
                (b + "ada_lin.1.weight", p + ("ada_lin", "kernel"), T),
                (b + "ada_lin.1.bias", p + ("ada_lin", "bias"), ident),
            ]
    return m


def _buffers(cfg):
    """Buffers VAR saves: consumed after a consistency check (they are recomputed here)."""
    L = seq_len(cfg.patch_nums)
    ids = scale_ids(cfg.patch_nums)

    def lvl(a):
        return a.shape == (1, L) and np.array_equal(a.reshape(-1), ids)

    def bias(a):
        if a.shape != (1, 1, L, L):
            return False
        allowed = ids[:, None] >= ids[None, :]
        a = a.reshape(L, L)
        return bool(np.all(a[allowed] == 0) and np.all(np.isneginf(a[~allowed])))

    out = {"lvl_1L": lvl, "attn_bias_for_masking": bias}
    for i in range(cfg.depth):
        out[f"blocks.{i}.attn.zero_k_bias"] = lambda a: a.shape == (cfg.embed_dim,) and not np.any(a)
    return out


def var_state_dict_to_params(sd: dict, patch_nums=None):
    """(params, config) from a VAR state_dict; see module doc."""
    cfg = detect_config(sd, patch_nums)
    module = var_lib.build(cfg)
    abstract = nn.meta.unbox(jax.eval_shape(
        module.init, jax.random.key(0), jnp.zeros((1,), jnp.int32),
        jnp.zeros((1, module.seq_len - module.first_l, cfg.cvae), jnp.float32),
    )["params"])
    want = {tuple(k.key for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}

    params, used = {}, set()
    for key, path, fn in _mapping(cfg):
        if key not in sd:
            raise CheckpointError(f"key {key!r} missing from the VAR checkpoint")
        arr = np.asarray(fn(np.asarray(sd[key], np.float32)))
        if path not in want or tuple(arr.shape) != tuple(want[path]):
            raise CheckpointError(
                f"key {key!r} has shape {tuple(sd[key].shape)}, which does not fit "
                f"{'/'.join(path)} {tuple(want.get(path, ()))} of a depth-{cfg.depth} width-"
                f"{cfg.embed_dim} VAR")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(arr)
        used.add(key)
    missing = set(want) - {p for _, p, _ in _mapping(cfg)}
    if missing:  # cannot happen unless the mapping and the module disagree
        raise CheckpointError(f"no checkpoint key maps to {'/'.join(sorted(missing)[0])}")
    for key, ok in _buffers(cfg).items():
        if key in sd:
            if not ok(np.asarray(sd[key])):
                raise CheckpointError(f"buffer {key!r} ({tuple(sd[key].shape)}) is not what VAR "
                                      "computes for this architecture")
            used.add(key)
    unused = sorted(set(sd) - used)
    if unused:
        raise CheckpointError(
            f"key {unused[0]!r} {tuple(np.shape(sd[unused[0]]))} is not part of a VAR transformer"
            f" of depth {cfg.depth}" + (f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""))
    return params, cfg


def check_against_tokenizer(cfg, tok_cfg: dict, where: str = "") -> None:
    """CheckpointError when the transformer's vocabulary/Cvae/scales differ from the tokenizer's."""
    prefix = f"{where}: " if where else ""
    for mine, theirs, what in (("vocab_size", "vocab_size", "vocabulary size"),
                               ("cvae", "z_channels", "latent channels (Cvae)")):
        if int(cfg[mine]) != int(tok_cfg[theirs]):
            raise CheckpointError(
                f"{prefix}the transformer's {what} is {cfg[mine]} but the tokenizer's is "
                f"{tok_cfg[theirs]}: this tokenizer does not belong to this model")
    if tuple(cfg.patch_nums) != tuple(tok_cfg["patch_nums"]):
        raise CheckpointError(
            f"{prefix}the transformer's patch_nums {list(cfg.patch_nums)} differ from the "
            f"tokenizer's {list(tok_cfg['patch_nums'])}")


def convert_var_checkpoint(src, dst, tokenizer_dir, *, copy_tokenizer: bool = True,
                           overwrite: bool = False) -> pathlib.Path:
    """VAR .pth -> model directory (see module doc). Returns the directory."""
    tokenizer_dir = pathlib.Path(tokenizer_dir).absolute()
    tok_cfg = read_config(tokenizer_dir, expect_kind="tokenizer")["config"]
    sd = load_state_dict(src)
    params, cfg = var_state_dict_to_params(sd, patch_nums=tok_cfg["patch_nums"])
    check_against_tokenizer(cfg, tok_cfg, str(src))

    dst = pathlib.Path(dst).absolute()
    meta = {"source": os.path.basename(str(src)), "converted_from": "FoundationVision/VAR"}
    if not copy_tokenizer:
        meta["tokenizer"] = str(tokenizer_dir)
    try:
        with atomic_dir(dst, overwrite=overwrite) as stage:
            save_params(stage, params, cfg, kind="var", meta=meta)
            if copy_tokenizer:
                shutil.copytree(tokenizer_dir, stage / TOKENIZER_SUBDIR)
    except FileExistsError:
        raise CheckpointError(f"{dst} already exists and is not empty (pass --overwrite)") from None
    return dst
