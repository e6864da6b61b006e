"""The JAX VAR transformer against the official PyTorch VAR (golden numbers in
tests/fixtures/var_model, made by tests/fixtures/make_var_fixtures.py from VAR's own code on
the tokenizer fixture's VQ-VAE).

Variants: l2 (depth 2, cosine attention), shared (depth 2, shared AdaLN as VAR-d36),
nol2 (depth 1, plain attention with VAR's 0.25/sqrt(d) scale).
"""

import hashlib
import json

import jax
import numpy as np
import pytest

import earthmapper_jax
from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.pth import load_state_dict
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.convert_var import (
    check_against_tokenizer,
    convert_var_checkpoint,
    var_state_dict_to_params,
)
from earthmapper_jax.sampling import generate_class
from earthmapper_jax.sampling.filtering import filter_top_k_top_p
from earthmapper_jax.tokenizer.convert import convert_var_vae

PATCH_NUMS = (1, 2, 3, 4, 6, 8)
VARIANTS = ("l2", "shared", "nol2")
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def dirs(fixtures_dir, tmp_path_factory):
    meta = json.loads((fixtures_dir / "var_model" / "meta.json").read_text())
    vae = fixtures_dir / "var_model" / meta["vae_source"]
    if hashlib.sha256(vae.read_bytes()).hexdigest() != meta["vae_sha256"]:
        pytest.fail(f"{vae} changed since tests/fixtures/var_model was made: rerun "
                    "tests/fixtures/make_var_fixtures.py (see its docstring)")
    root = tmp_path_factory.mktemp("var_parity")
    tok_dir = root / "tokenizer"
    convert_var_vae(vae, tok_dir, image_size=128,
                    patch_nums=PATCH_NUMS)
    out = {}
    # the l2 model through the CLI (tokenizer copied in), the others through the library
    # with the tokenizer only referenced
    rc = cli_main(["convert", "var", str(fixtures_dir / "var_model" / "var_l2.pth"),
                   str(root / "l2"), "--tokenizer", str(tok_dir)])
    assert rc == 0
    out["l2"] = root / "l2"
    for name in ("shared", "nol2"):
        out[name] = convert_var_checkpoint(fixtures_dir / "var_model" / f"var_{name}.pth",
                                           root / name, tok_dir, copy_tokenizer=False)
    out["tokenizer"] = tok_dir
    return out


@pytest.fixture(scope="module")
def models(dirs):
    return {name: earthmapper_jax.load(dirs[name]) for name in VARIANTS}


def _golden(fixtures_dir, name):
    return dict(np.load(fixtures_dir / "var_model" / f"golden_{name}.npz"))


def _gt(g):
    return [g[f"gt_idx_{si}"] for si in range(len(PATCH_NUMS))]


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", VARIANTS)
def test_detected_architecture(models, name):
    c = models[name].config
    assert c.mode == "var" and c.num_heads == 2 and c.embed_dim == 128
    assert (c.depth, c.attn_l2_norm, c.shared_aln) == {
        "l2": (2, True, False), "shared": (2, True, True), "nol2": (1, False, False)}[name]
    assert tuple(c.patch_nums) == PATCH_NUMS and c.vocab_size == 512 and c.cvae == 8
    assert (models[name].directory / "tokenizer").is_dir() == (name == "l2")


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forced_logits(models, fixtures_dir, name):
    g = _golden(fixtures_dir, name)
    m = models[name]
    # the full path: token maps -> tokenizer teacher-forcing inputs -> transformer
    rel = _rel(m.logits(g["labels"], _gt(g)), g["logits"])
    # the transformer alone on VAR's own inputs, through the exact-einsum attention
    exact = var_lib.build(m.config, attention="einsum")
    rel_tf = _rel(var_lib.forward(exact, m.params, g["labels"], g["x_BLCv"]), g["logits"])
    print(f"{name}: logits rel err {rel:.2e} (tokens), {rel_tf:.2e} (VAR inputs, einsum)")
    assert rel <= REL_TOL and rel_tf <= REL_TOL


@pytest.mark.parametrize("name", ["l2", "nol2"])
def test_teacher_forced_logits_bias_attention(models, fixtures_dir, name):
    """The "xla_bias" attention (issue 18: the block-causal mask as an additive bias) meets
    the same tolerance against VAR's logits as the exact path."""
    g = _golden(fixtures_dir, name)
    m = models[name]
    biased = var_lib.build(m.config, attention="xla_bias")
    rel = _rel(var_lib.forward(biased, m.params, g["labels"], g["x_BLCv"]), g["logits"])
    assert rel <= REL_TOL


# nol2 sampling is left out (its golden tokens exist): the sampler code is shared and the
# plain-attention scale is covered by its logits; each case costs a compilation
@pytest.mark.parametrize("name,cfg", [("l2", 0.0), ("l2", 4.0), ("shared", 4.0)])
def test_greedy_sampling_matches_var(models, fixtures_dir, name, cfg):
    g = _golden(fixtures_dir, name)
    m = models[name]
    decode = name == "l2" and cfg > 0
    maps, images = generate_class(m, g["labels"], jax.random.key(0), cfg=cfg, top_k=1, top_p=0.0,
                                  decode=decode)
    tag = f"s{int(cfg)}"
    for si, pn in enumerate(PATCH_NUMS):
        np.testing.assert_array_equal(np.asarray(maps[si]), g[f"{tag}_idx_{si}"],
                                      err_msg=f"{name} cfg={cfg}: scale {si} differs")
    if decode:
        np.testing.assert_allclose(np.asarray(images), g[f"{tag}_img"], atol=2e-4, rtol=0)
        # VAR's cached-sampling logits equal our teacher-forced logits on the same tokens
        ours_c = np.asarray(m.logits(g["labels"], maps))
        ours_u = np.asarray(m.logits(np.full_like(g["labels"], m.config.num_classes), maps))
        start = 0
        for si, pn in enumerate(PATCH_NUMS):
            t = cfg * si / (len(PATCH_NUMS) - 1)
            mine = (1 + t) * ours_c[:, start:start + pn * pn] - t * ours_u[:, start:start + pn * pn]
            assert _rel(mine, g[f"{tag}_logits_{si}"]) <= REL_TOL, f"scale {si}"
            start += pn * pn


def test_filter_matches_var(fixtures_dir):
    g = dict(np.load(fixtures_dir / "var_model" / "golden_filter.npz"))
    for key, ref in g.items():
        if key in ("tied", "smooth"):
            continue
        src, k, *p = key.split("_")
        top_p = int(p[0][1:]) / 100 if p else 0.0
        out = np.asarray(filter_top_k_top_p(g[src], int(k[1:]), top_p))
        np.testing.assert_array_equal(np.isinf(out), np.isinf(ref), err_msg=key)
        np.testing.assert_array_equal(out[~np.isinf(out)], ref[~np.isinf(ref)])


def test_converter_rejects_bad_checkpoints(fixtures_dir):
    sd = load_state_dict(fixtures_dir / "var_model" / "var_l2.pth")
    params, cfg = var_state_dict_to_params(sd, PATCH_NUMS)
    assert var_lib.param_count(params) == sum(
        v.size for k, v in sd.items()
        if k not in ("lvl_1L", "attn_bias_for_masking") and "zero_k_bias" not in k)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.ffn.fc2.bias"}
    with pytest.raises(CheckpointError, match="blocks.1.ffn.fc2.bias"):
        var_state_dict_to_params(missing, PATCH_NUMS)
    extra = dict(sd, **{"blocks.0.attn.extra": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="blocks.0.attn.extra"):
        var_state_dict_to_params(extra, PATCH_NUMS)
    bad = dict(sd, **{"head.bias": np.zeros(7, np.float32)})
    with pytest.raises(CheckpointError, match="head.bias"):
        var_state_dict_to_params(bad, PATCH_NUMS)
    with pytest.raises(CheckpointError, match="patch_nums"):
        var_state_dict_to_params(sd, (1, 2, 3, 4, 5, 8))
    with pytest.raises(CheckpointError, match="vocabulary"):
        check_against_tokenizer(cfg, {"vocab_size": 4096, "z_channels": 8,
                                      "patch_nums": PATCH_NUMS})


def test_cli_reports_errors_in_one_line(dirs, tmp_path, capsys):
    rc = cli_main(["convert", "var", str(tmp_path / "nope.pth"), str(tmp_path / "out"),
                   "--tokenizer", str(dirs["tokenizer"])])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "nope.pth" in err
    rc = cli_main(["convert", "var", str(tmp_path / "nope.pth"), str(dirs["l2"]),
                   "--tokenizer", str(dirs["l2"])])  # a model dir is not a tokenizer
    assert rc == 1 and "tokenizer" in capsys.readouterr().err
