"""EarthMapper (GJSA) model and sampler: internal consistency on tiny random shapes.

- the joint mask never lets a token see a finer scale (mask check and input perturbation);
  "group" keeps the two halves of a scale apart;
- the KV-cached sampler's guided logits per scale equal the teacher-forced forward on the
  sampled tokens combined with the same guidance (joint generation with Complexity Guidance;
  sat->map with all three CFG terms); condition tokens are exactly the real ones;
- in-painting keeps the known region's tokens; init from a VAR directory; loading; the
  training loss; bad input (one clear line each); the translate CLI;
- the parameter tree of the tiny model is the one saved model directories have; the periodic
  sample grid compiles its samplers once per run.
"""

import contextlib
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

import earthmapper_jax
from configs import earthmapper_tiny
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models import layout
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.dinov2 import VARIANTS, DinoV2
from earthmapper_jax.models.loading import Model
from earthmapper_jax.models.var_mode import tokenizer_parts
from earthmapper_jax.sampling import earthmapper_sampler as S
from earthmapper_jax.sampling import guidance as G
from earthmapper_jax.sampling.inpaint_masks import scale_masks
from earthmapper_jax.scales import flatten_tokens, split_tokens
from earthmapper_jax.tokenizer.model import VQVAE
from earthmapper_jax.train import earthmapper_task as emt
from earthmapper_jax.train import optim, sharding, trainer

# A small, fast-compiling tokenizer (48 px, 6×6 latent, 5 scales); values are random anyway.
TOK_CFG = dict(ch=32, vocab_size=512, z_channels=8, image_size=48, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 3, 4, 6))
S_PX = TOK_CFG["image_size"]
PN = TOK_CFG["patch_nums"]
LH = sum(p * p for p in PN)


def _perturb(params, seed, scale=0.05):
    # VAR's init leaves blocks near identity (gamma ~1e-5) and modality embeddings at 0
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    t = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    d = tmp_path_factory.mktemp("tok") / "tokenizer"
    t.save(d)
    t.directory = d
    return t


@pytest.fixture(scope="module")
def model(tok):
    mc = em.model_config("tiny", attention="einsum", sample_attention="einsum", patch_nums=PN)
    return Model(mc, _perturb(em.init_params(mc, jax.random.key(1)), 2), tok)


def _tokens(seed, B=2):
    return jnp.asarray(np.random.default_rng(seed).integers(0, TOK_CFG["vocab_size"], (B, LH)), jnp.int32)


def _tf(model, flat):
    return model.tokenizer.model.apply({"params": model.tokenizer.params}, split_tokens(flat, PN),
                                       method=VQVAE.teacher_forcing_inputs)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("within", ["group", "all"])
def test_mask_never_sees_finer_scale(model, within):
    lay = layout.joint_layout(PN)
    m = layout.joint_mask(PN, within)
    assert not (m & (lay["scale"][None, :] > lay["scale"][:, None])).any()
    same = lay["scale"][:, None] == lay["scale"][None, :]
    other = lay["modality"][:, None] != lay["modality"][None, :]
    assert (m[same & other].any()) == (within == "all")

    module = em.build(model.config, within_scale=within)
    rng = np.random.default_rng(0)
    tf_sat, tf_map = (jnp.asarray(rng.normal(size=(2, LH - 1, 8)), jnp.float32) for _ in range(2))
    coords = jnp.array([[10.0, 20.0], [np.nan, np.nan]])
    fwd = jax.jit(lambda a, b: module.apply({"params": model.params}, coords, a, b)[0])
    base = np.asarray(fwd(tf_sat, tf_map))
    for k in (1, 3, len(PN) - 1):
        hb = sum(p * p for p in PN[:k])
        n = PN[k] ** 2
        jb = lay["begins"][k]
        out = np.asarray(fwd(tf_sat.at[:, hb - 1 : hb - 1 + n].add(1.0), tf_map))  # sat inputs of scale k
        assert np.array_equal(out[:, :jb], base[:, :jb]), f"scale {k} leaked into coarser scales"
        assert np.abs(out[:, jb : jb + n] - base[:, jb : jb + n]).max() > 1e-4
        map_k_changed = np.abs(out[:, jb + n : jb + 2 * n] - base[:, jb + n : jb + 2 * n]).max() > 1e-6
        assert map_k_changed == (within == "all"), "within-scale visibility between the halves"


# ----------------------------------------------------------------------------- sampler


def _run(model, coords, known, keep, roles, weights, complexity, branches, top_k=20):
    tok_module, tok_params = tokenizer_parts(model.tokenizer)
    spec = S.Spec(roles=roles, branches=branches, top_k=top_k, complexity=complexity, kpf=False,
                  decode=False, return_logits=True)
    knobs = dict(weights=jnp.asarray(weights, jnp.float32), gamma=jnp.float32(1.0),
                 alpha_power=jnp.float32(1.0), beta_min=jnp.float32(0.5), tau=jnp.float32(2.0),
                 top_p=jnp.float32(0.0), temperature=jnp.float32(1.0))
    fn = jax.jit(lambda p, tp, c, kn, kp, r: S.sample_joint(model.module, tok_module, p, tp, c, kn, kp, r,
                                                          knobs, spec=spec))
    return fn(model.params, tok_params, coords, known, keep, jax.random.key(7))


def _scale_slice(out_flat_half, si):
    b = sum(p * p for p in PN[:si])
    return out_flat_half[:, b : b + PN[si] ** 2]


def test_cached_joint_generation_equals_teacher_forcing_with_complexity(model):
    coords = jnp.array([[30.0, 120.0], [-12.5, 44.0]])
    zero, no = jnp.zeros((2, LH), jnp.int32), jnp.zeros((2, LH), bool)
    out = _run(model, coords, (zero, zero), (no, no), ("free", "free"), (0.0, 0.0, 2.0), True, ("full", "uncond"))
    sat, mp = (flatten_tokens(t) for t in out["tokens"])
    tf_sat, tf_map = _tf(model, sat), _tf(model, mp)
    f = model.module.apply({"params": model.params}, coords, tf_sat, tf_map)[0]
    u = model.module.apply({"params": model.params}, jnp.full_like(coords, np.nan), tf_sat, tf_map)[0]
    (f_sat, f_map), (u_sat, u_map) = layout.from_joint(f, PN), layout.from_joint(u, PN)
    for si in range(len(PN)):
        for m, (fh, uh) in enumerate(((f_sat, u_sat), (f_map, u_map))):
            F, U = _scale_slice(fh, si), _scale_slice(uh, si)
            s = G.complexity_strength(G.ramp(si, len(PN)), G.complexity(F), gamma=1.0, beta_min=0.5)
            want = G.multi_term_cfg(F, (0.0, 0.0, 2.0), s, uncond=U)
            np.testing.assert_allclose(np.asarray(out["logits"][si][m]), np.asarray(want), rtol=0, atol=3e-5,
                                       err_msg=f"scale {si} modality {m}")


@pytest.mark.parametrize("directed_rate,coloc", [(0.0, False), (0.5, False), (0.5, True)])
def test_cached_translation_equals_teacher_forcing_all_terms(model, directed_rate, coloc):
    """sat->map with all three CFG terms; with directed_rate > 0 the satellite half is a
    directed condition (its own tokens shown, directed mask), else the paper's joint rows;
    coloc: + the satellite's f_hat pyramid at the map's positions (coloc_cond)."""
    mc = dict(model.config.to_dict(), directed_rate=directed_rate, coloc_cond=coloc)
    params = _perturb(em.init_params(mc, jax.random.key(1)), 2) if coloc else model.params
    model = Model(mc, params, model.tokenizer)
    coords = jnp.array([[30.0, 120.0], [1.0, 2.0]])
    sat_real = _tokens(3)
    zero = jnp.zeros((2, LH), jnp.int32)
    tok_module, tok_params = tokenizer_parts(model.tokenizer)
    lead = layout.SAT if directed_rate else None
    spec = S.Spec(roles=("cond", "free"), branches=("full", "nogeo", "nocond", "uncond"), top_k=20,
                  complexity=False, kpf=False, decode=False, return_logits=True, lead=lead)
    knobs = dict(weights=jnp.asarray((1.0, 2.0, 0.5)), gamma=jnp.float32(1.0), alpha_power=jnp.float32(1.0),
                 beta_min=jnp.float32(0.5), tau=jnp.float32(2.0), top_p=jnp.float32(0.0),
                 temperature=jnp.float32(1.0))
    out = jax.jit(lambda p, tp: S.sample_joint(
        model.module, tok_module, p, tp, coords, (sat_real, zero),
        (jnp.ones((2, LH), bool), jnp.zeros((2, LH), bool)), jax.random.key(7), knobs, spec=spec))(
        model.params, tok_params)
    sat_out, mp = (flatten_tokens(t) for t in out["tokens"])
    np.testing.assert_array_equal(np.asarray(sat_out), np.asarray(sat_real))  # condition kept exactly
    tf_sat, tf_map = _tf(model, sat_real), _tf(model, mp)
    nan = jnp.full_like(coords, np.nan)
    yes = jnp.ones((2,), bool)
    extra = {} if lead is None else dict(direction=jnp.zeros((2,), jnp.int32), ids_sat=sat_real)
    extra.update(em.coloc_inputs(coloc, tok_module, tok_params, (sat_real, mp), PN))

    def map_half(c, null_sat=None):
        lg = model.module.apply({"params": model.params}, c, tf_sat, tf_map, null_sat=null_sat, **extra)[0]
        return layout.from_joint(lg, PN)[1]

    F, A, Bc, U = map_half(coords), map_half(nan), map_half(coords, yes), map_half(nan, yes)
    assert float(jnp.abs(F - Bc).max()) > 1e-3  # the condition matters
    for si in range(len(PN)):
        sl = lambda x: _scale_slice(x, si)  # noqa: E731
        want = G.multi_term_cfg(sl(F), (1.0, 2.0, 0.5), G.ramp(si, len(PN)),
                                nogeo=sl(A), nocond=sl(Bc), uncond=sl(U))
        np.testing.assert_allclose(np.asarray(out["logits"][si][layout.MAP]), np.asarray(want), rtol=0,
                                   atol=3e-5, err_msg=f"scale {si}")


def test_directed_rows_see_the_condition_of_their_own_scale(model):
    """Directed mask + condition ids: the target at scale k changes when the condition's
    scale-k tokens change (joint rows cannot see them); nothing leaks to coarser scales."""
    lay = layout.joint_layout(PN)
    dm = layout.directed_mask(PN, "group", layout.SAT)
    assert not (dm & (lay["scale"][None, :] > lay["scale"][:, None])).any()
    sat, mp = _tokens(8), _tokens(9)
    k = 3
    hb, n, jb = sum(p * p for p in PN[:k]), PN[k] ** 2, lay["begins"][k]
    sat2 = sat.at[:, hb : hb + n].set((sat[:, hb : hb + n] + 1) % TOK_CFG["vocab_size"])
    coords = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    d = dict(direction=jnp.zeros((2,), jnp.int32))
    a = model.module.apply({"params": model.params}, coords, _tf(model, sat), _tf(model, mp), ids_sat=sat, **d)[0]
    b = model.module.apply({"params": model.params}, coords, _tf(model, sat2), _tf(model, mp), ids_sat=sat2, **d)[0]
    np.testing.assert_array_equal(np.asarray(a[:, :jb]), np.asarray(b[:, :jb]))
    assert float(jnp.abs(a[:, jb + n : jb + 2 * n] - b[:, jb + n : jb + 2 * n]).max()) > 1e-4


def test_inpainting_keeps_known_tokens(model, tok):
    images = np.random.default_rng(1).uniform(-1, 1, (2, S_PX, S_PX, 3)).astype(np.float32)
    known = np.asarray(flatten_tokens(tok.encode(images)))
    mask = np.zeros((2, PN[-1], PN[-1]), bool)  # on the last token grid: True = generate
    mask[:, 2:5, 1:4] = True
    maps, imgs = S.inpaint(model, images, mask, "map", jax.random.key(0), top_k=5, decode=False)
    assert imgs is None
    keep_scales = scale_masks((~mask).astype(float), PN)
    np.testing.assert_array_equal(keep_scales[-1], ~mask)  # the last scale keeps exactly ~mask
    keep = np.concatenate([k.reshape(2, -1) for k in keep_scales], 1)
    got = np.asarray(flatten_tokens(maps))
    np.testing.assert_array_equal(got[keep], known[keep])
    assert (got[~keep] != known[~keep]).any()  # the masked region is generated


def test_translate_api_greedy_deterministic(model):
    images = np.random.default_rng(2).uniform(-1, 1, (2, S_PX, S_PX, 3)).astype(np.float32)
    kw = dict(coords=[[30.0, 120.0], [31.0, 121.0]], top_k=1, top_p=0.0, decode=False, kpf_tau=0.9)
    a, _ = S.translate(model, images, "sat2map", jax.random.key(0), **kw)
    b, _ = S.translate(model, images, "sat2map", jax.random.key(5), **kw)
    assert [x.shape for x in a] == [(2, p, p) for p in PN]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_scanned_and_bf16_samplers(model):
    """scan_layers gives the same greedy translation; the bf16 sampler runs and stays in range."""
    images = np.random.default_rng(4).uniform(-1, 1, (1, S_PX, S_PX, 3)).astype(np.float32)
    kw = dict(top_k=1, top_p=0.0, guidance=(0.0, 0.0, 0.0), decode=False)
    a, _ = S.translate(model, images, "map2sat", jax.random.key(0), **kw)
    b, _ = S.translate(model.with_config(scan_layers=True), images, "map2sat", jax.random.key(0), **kw)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    (sm, mm), _ = S.generate(model, [[10.0, 20.0]], jax.random.key(1), dtype="bfloat16", decode=False)
    assert all(int(t.max()) < TOK_CFG["vocab_size"] and t.dtype == jnp.int32 for t in sm + mm)


# ----------------------------------------------------------------------------- training / init / loading


def test_loss_and_var_init(model, tok, tmp_path):
    vc = var_lib.var_config("tiny", patch_nums=PN)
    vp = _perturb(var_lib.init_params(vc, jax.random.key(3)), 4)
    save_params(tmp_path / "var", vp, vc, kind="var")
    mc = em.model_config("tiny", attention="einsum", tokenizer_dir=str(tok.directory), patch_nums=PN,
                         var_init=str(tmp_path / "var"))
    config = {"model": mc}
    params = nn.meta.unbox(emt.init_params(config, jax.random.key(5), emt.pretrained(config)))
    for key in ("blocks", "head", "head_nm", "pos_1LC", "lvl_embed", "word_embed", "pos_start"):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params[key], vp[key])
    np.testing.assert_array_equal(params["geo"]["null"], vp["class_emb"]["embedding"][-1])
    assert not np.asarray(params["modality_embed"]).any()
    # the trainer reads the VAR directory once, on the host, and its jitted init starts from it
    tcfg = earthmapper_tiny.get_config("tiny")
    tcfg.model = mc
    tx, _ = optim.make_optimizer(tcfg.optim, 8, 10, 0)
    mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    state, _ = trainer.create_train_state(tcfg, emt.make_task(), mesh, tx)
    got = jax.device_get(state.params)
    for key in ("blocks", "head", "pos_1LC"):
        jax.tree.map(np.testing.assert_array_equal, got[key], params[key])
    np.testing.assert_array_equal(got["geo"]["null"], params["geo"]["null"])
    np.testing.assert_array_equal(got["geo"]["mlp_out"]["bias"], params["geo"]["mlp_out"]["bias"])

    batch = {"sat_tokens": _tokens(1), "map_tokens": _tokens(2), "coords": jnp.array([[1.0, 2.0], [np.nan, np.nan]]),
             "sat_sem": jnp.ones((2, 4, 4, 32)), "map_sem": jnp.zeros((2, 4, 4, 32))}
    frozen = emt.Frozen.of(tok.params, tok.config)
    loss, metrics = jax.jit(lambda p, b, r: emt.loss_fn(p, b, r, config, frozen))(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and float(metrics["si_loss"]) > 0
    assert {"ce_sat", "ce_map", "acc_sat", "acc_map", f"ce_scale_{len(PN) - 1}", "acc_scale_0"} <= set(metrics)
    np.testing.assert_allclose(float(loss), float(metrics["ce"]) + 0.5 * float(metrics["si_loss"]), rtol=1e-5)

    # images tokenised on the fly, SI targets from a (random, test-size) DINOv2 on the fly
    dino = DinoV2(**VARIANTS[mc.si_encoder])
    frozen = frozen.replace(dinov2=dino.init(
        jax.random.key(6), jnp.zeros((1, mc.si_image_size, mc.si_image_size, 3)))["params"])
    imgs = np.random.default_rng(3).uniform(-1, 1, (2, S_PX, S_PX, 3)).astype(np.float32)
    batch = {"sat_image": imgs, "map_image": imgs[::-1], "coords": batch["coords"]}
    loss2, m2 = jax.jit(lambda p, b, r: emt.loss_fn(p, b, r, config, frozen))(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss2)) and float(m2["si_loss"]) > 0


def test_load_logits_and_tokenizer_mismatch(model, tok, tmp_path):
    d = save_params(tmp_path / "em", model.params, model.config, kind="earthmapper",
                    meta={"tokenizer": str(tok.directory)})
    loaded = earthmapper_jax.load(d)
    assert loaded.mode == "earthmapper"
    sat, mp = split_tokens(_tokens(4), PN), split_tokens(_tokens(5), PN)
    lg = loaded.logits([[10.0, 20.0], [np.nan, np.nan]], (sat, mp))
    assert lg.shape == (2, 2 * LH, TOK_CFG["vocab_size"])
    with pytest.raises(InputError, match="out of range"):
        loaded.logits([[100.0, 20.0], [0.0, 0.0]], (sat, mp))
    # a checkpoint whose tokenizer does not match
    other = dict(model.config.to_dict(), vocab_size=1024)
    d2 = save_params(tmp_path / "em2", model.params, other, kind="earthmapper", meta={"tokenizer": str(tok.directory)})
    with pytest.raises(CheckpointError, match="does not belong") as e:
        earthmapper_jax.load(d2)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(direction="sat2sat"), "unknown direction"),
        (dict(coords=[[95.0, 0.0], [0.0, 0.0]]), "out of range"),
        (dict(coords=[[np.nan, 0.0], [0.0, 0.0]]), "half NaN"),
        (dict(images=np.zeros((2, 32, 32, 3), np.float32)), "does not match the tokenizer"),
        (dict(images=np.full((2, S_PX, S_PX, 3), 3.0, np.float32)), "expected \\[-1, 1\\]"),
        (dict(guidance=(1, 2)), "triple"),
        (dict(top_p=2.0), "top_p"),
    ],
)
def test_bad_input_one_line(model, kwargs, msg):
    args = dict(images=np.zeros((2, S_PX, S_PX, 3), np.float32), direction="sat2map", coords=None)
    args.update(kwargs)
    images, direction, coords = args.pop("images"), args.pop("direction"), args.pop("coords")
    with pytest.raises(InputError, match=msg) as e:
        S.translate(model, images, direction, jax.random.key(0), coords=coords, decode=False, **args)
    assert "\n" not in str(e.value)


def test_bad_mask_and_modality(model):
    images = np.zeros((1, S_PX, S_PX, 3), np.float32)
    with pytest.raises(InputError, match="mask has shape"):
        S.inpaint(model, images, np.zeros((5, 5), bool), "map", jax.random.key(0), decode=False)
    with pytest.raises(InputError, match="unknown modality"):
        S.inpaint(model, images, np.zeros((S_PX, S_PX), bool), "road", jax.random.key(0))


def test_translate_cli(model, tok, tmp_path, capsys):
    d = save_params(tmp_path / "em", model.params, model.config, kind="earthmapper",
                    meta={"tokenizer": str(tok.directory)})
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src / f"{name}.png")
    out = tmp_path / "out"
    rc = cli_main(["translate", "--checkpoint", str(d), "--direction", "map2sat", str(src), "--out", str(out),
               "--batch-size", "2", "--top-k", "1", "--guidance", "0,0,0", "--coords", "30,120"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_sat.png", "b_sat.png", "c_sat.png", "translate_options.json"]
    assert Image.open(out / "a_sat.png").size == (S_PX, S_PX)
    Image.fromarray(np.zeros((64, 32, 3), np.uint8)).save(src / "bad.png")
    rc = cli_main(["translate", "--checkpoint", str(d), "--direction", "map2sat", str(src / "bad.png"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].endswith("expected a square tile")
    rc = cli_main(["translate", "--checkpoint", str(d), "--direction", "up", str(src), "--out", str(out)])
    assert rc == 1 and "unknown direction" in capsys.readouterr().err


# ----------------------------------------------------------------------------- layout of saved models


def test_param_tree_is_the_saved_layout():
    """The tiny model's parameter names, nesting and shapes, as saved model directories hold
    them (written out here, not derived from the code)."""
    C, V, L, K = 128, 512, 130, 6
    block = {"attn/mat_qkv/kernel": (C, 3 * C), "attn/proj/kernel": (C, C), "attn/proj/bias": (C,),
             "attn/q_bias": (C,), "attn/v_bias": (C,), "attn/scale_mul": (2,),
             "ffn/fc1/kernel": (C, 4 * C), "ffn/fc1/bias": (4 * C,), "ffn/fc2/kernel": (4 * C, C),
             "ffn/fc2/bias": (C,), "ada_lin/kernel": (C, 6 * C), "ada_lin/bias": (6 * C,)}
    want = {f"blocks/layer_{i}/{k}": v for i in range(2) for k, v in block.items()}
    want.update({
        "word_embed/kernel": (8, C), "word_embed/bias": (C,), "pos_start": (1, C), "pos_1LC": (L, C),
        "lvl_embed/embedding": (K, C), "head_nm/ada_lin/kernel": (C, 2 * C),
        "head_nm/ada_lin/bias": (2 * C,), "head/kernel": (C, V), "head/bias": (V,),
        "geo/mlp_in/kernel": (64, C), "geo/mlp_in/bias": (C,), "geo/mlp_out/kernel": (C, C),
        "geo/mlp_out/bias": (C,), "geo/null": (C,), "modality_embed": (2, C), "cond_null": (C,),
        "cond_token_embed/embedding": (V, C), "lead_embed": (C,),
        "si_head/fc1/kernel": (C, 64), "si_head/fc1/bias": (64,), "si_head/fc2/kernel": (64, 64),
        "si_head/fc2/bias": (64,), "si_head/fc3/kernel": (64, 32), "si_head/fc3/bias": (32,),
    })
    mc = em.model_config("tiny")
    boxed = jax.eval_shape(lambda: em.init_params(mc, jax.random.key(0), keep_axis_names=True))
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(boxed))[0]
    assert {"/".join(k.key for k in path): tuple(x.shape) for path, x in flat} == want
    plain = jax.eval_shape(lambda: em.init_params(mc, jax.random.key(0)))
    assert jax.tree.structure(plain) == jax.tree.structure(nn.meta.unbox(boxed))


def test_load_reads_the_old_name_of_modality_dropout(model, tok, tmp_path):
    old = model.config.to_dict()
    old["cond_drop_rate"] = old.pop("modality_drop_rate")
    d = save_params(tmp_path / "em_old", model.params, old, kind="earthmapper",
                    meta={"tokenizer": str(tok.directory)})
    loaded = earthmapper_jax.load(d)
    assert "cond_drop_rate" not in loaded.config
    assert loaded.config.modality_drop_rate == model.config.modality_drop_rate


# ----------------------------------------------------------------------------- sample grid


@contextlib.contextmanager
def _count_compilations():
    """Counts XLA compilations (JAX logs one "Compiling ..." record per cache miss)."""
    records = []

    class Handler(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Compiling"):
                records.append(record.getMessage())

    handler, logger = Handler(level=logging.DEBUG), logging.getLogger("jax")
    logger.addHandler(handler)
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    try:
        yield records
    finally:
        jax.config.update("jax_log_compiles", previous)
        logger.removeHandler(handler)


def test_sample_grid_compiles_once_per_run(model, tok, tmp_path):
    """The trainer's periodic sample hook: the second grid of a run compiles nothing."""
    mc = dict(model.config.to_dict(), tokenizer_dir=str(tok.directory))
    config = ml_collections.ConfigDict({"model": mc, "sample_options": {"top_k": 5, "top_p": 0.9}})
    frozen = emt.load_frozen(config)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, S_PX, S_PX, 3)).astype(np.float32)
    batch = {"sat_image": images, "map_image": images[::-1],
             "coords": np.array([[1.0, 2.0], [np.nan, np.nan]], np.float32)}
    params = jax.tree.map(jnp.asarray, model.params)  # a fresh copy, as every training step gives
    with _count_compilations() as first:
        emt.sample_fn(params, batch, jax.random.key(0), config, tmp_path / "a.png", frozen)
    params = jax.tree.map(lambda x: x + 0, params)
    with _count_compilations() as second:
        m = emt.sample_fn(params, batch, jax.random.key(1), config, tmp_path / "b.png", frozen)
    assert first, "the counter saw no compilation at all"
    assert second == [], second
    assert Image.open(tmp_path / "b.png").size[0] > 6 * S_PX and set(m) == {"l1_sat2map", "l1_map2sat"}
