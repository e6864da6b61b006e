"""pix2pix baseline: shapes at 64 and 256 px, which parameters each loss term reaches, a short
run of the trainer on the synthetic city lowering held-out L1, export -> load -> translate CLI."""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import earthmapper_jax
from configs import pix2pix as pix2pix_config
from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.data.synthetic_city import make_batch
from earthmapper_jax.errors import InputError
from earthmapper_jax.models import pix2pix
from earthmapper_jax.sampling import translate
from earthmapper_jax.train import pix2pix_task, sharding, trainer
from earthmapper_jax.train.image_data import eval_data

def _config(size=32, width=8, **over):
    c = pix2pix_config.get_config("tiny")
    c.model.image_size = c.data.image_size = size
    c.model.ngf = c.model.ndf = width
    for k, v in over.items():
        node = c
        *parents, leaf = k.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


@pytest.mark.parametrize("size,ngf,enc,patches", [(64, 32, 6, 6), (256, 64, 8, 30)])
def test_shapes_and_named_params(size, ngf, enc, patches):
    mc = pix2pix.model_config(dict(image_size=size, ngf=ngf, ndf=64))
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    gen, disc = pix2pix.build(mc), pix2pix.build_discriminator(mc)
    gv = jax.eval_shape(lambda: gen.init(jax.random.key(0), jnp.zeros(x.shape)))
    dv = jax.eval_shape(lambda: disc.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros(x.shape)))
    assert jax.eval_shape(lambda v, a: gen.apply(v, a), gv, x).shape == (2, size, size, 3)
    assert jax.eval_shape(lambda v, a: disc.apply(v, a, a), dv, x).shape == (2, patches, patches, 1)
    enc_names = [k for k in gv["params"] if k.startswith("enc_") and "norm" not in k]
    assert len(enc_names) == enc == pix2pix.levels(size)
    if size == 256:  # the paper's generator and 70×70 discriminator
        count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.meta.unbox(t)))  # noqa: E731
        assert count(gv) == 54_419_459 and count(dv) == 2_769_601
    # every large parameter carries names the sharding table knows (raises otherwise)
    mesh = sharding.make_mesh(None)
    sharding.param_shardings({"gen": gv["params"], "disc": dv["params"]}, mesh)


def test_real_forward_at_64():
    c = _config(size=64, width=8)
    params = nn.meta.unbox(pix2pix_task.init_params(c, jax.random.key(0)))
    x = jnp.asarray(make_batch(2, 64, seed=1)["sat_image"])
    y = pix2pix_task.translate_batch(params["gen"], x, jax.random.key(1), c)
    assert y.shape == (2, 64, 64, 3) and bool(jnp.all(jnp.abs(y) <= 1))
    off = lambda r: pix2pix_task.translate_batch(params["gen"], x, r, c, dropout=False)  # noqa: E731
    np.testing.assert_array_equal(off(jax.random.key(1)), off(jax.random.key(2)))


def _nonzero(tree):
    return {jax.tree_util.keystr(p): float(jnp.max(jnp.abs(g))) > 0
            for p, g in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_each_loss_term_reaches_only_its_network():
    c = _config(size=32, width=8)
    params = nn.meta.unbox(pix2pix_task.init_params(c, jax.random.key(0)))
    b = make_batch(4, 32, seed=2)
    batch = {k: jnp.asarray(b[k]) for k in ("sat_image", "map_image")}
    rng = jax.random.key(3)

    def term(name):
        return jax.grad(lambda p: pix2pix_task.loss_terms(p, batch, rng, c)[0][name])(params)

    for name, reaches in (("l1", "gen"), ("g_adv", "gen"), ("d_loss", "disc")):
        g = term(name)
        other = "disc" if reaches == "gen" else "gen"
        assert not any(_nonzero(g[other]).values()), f"{name} moves the {other}"
        assert sum(_nonzero(g[reaches]).values()) >= 0.9 * len(_nonzero(g[reaches])), name
    # the one scalar the trainer differentiates = the terms, each on its own side
    total = jax.grad(lambda p: pix2pix_task.loss_fn(p, batch, rng, c)[0])(params)
    g_l1, g_adv, g_d = term("l1"), term("g_adv"), term("d_loss")
    want_gen = jax.tree.map(lambda a, b: 100.0 * a + b, g_l1["gen"], g_adv["gen"])
    for got, want in ((total["gen"], want_gen), (total["disc"], g_d["disc"])):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_config_errors_name_the_field():
    for over, field in ((dict(model__direction="sat2sat"), "direction"),
                        (dict(model__image_size=48, data__image_size=48), "image_size"),
                        (dict(loss__gan_loss="hinge"), "gan_loss"),
                        (dict(data__image_size=64), "data.image_size")):
        with pytest.raises(InputError, match=field):
            pix2pix_task.init_params(_config(**over), jax.random.key(0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """40 steps of the trainer on 32 px synthetic-city tiles; (config, workdir, data dir)."""
    tmp = tmp_path_factory.mktemp("p2p")
    data = tmp / "syn"
    assert cli_main(["prepare", "synthetic", "--n", "72", "--size", "32", "--val-fraction",
                     "0.12", "--out", str(data), "--quiet"]) == 0
    c = _config(size=32, width=8, total_steps=40, batch_size=8, log_every_steps=10,
                eval_every_steps=0, eval_batches=1, progress=False,
                data__dir=str(data), data__examples_per_epoch=None)
    c.optim.base_lr = 1e-3 * 256 / 8  # a short run: a larger step than the paper's 2e-4
    c.checkpoint.async_save = False
    out = trainer.train_and_evaluate(c, tmp / "run")
    assert out["step"] == 40 and out["stopped"] == "done"
    return c, tmp / "run", data


def _heldout(c, data):
    c = c.copy_and_resolve_references()
    c.data.dir = str(data)
    batch = next(iter(eval_data(c, batch_size=8)))
    return jnp.asarray(batch["sat_image"]), jnp.asarray(batch["map_image"])


def test_short_run_lowers_heldout_l1(trained):
    c, run, data = trained
    sat, mp = _heldout(c, data)
    model = earthmapper_jax.load(run / "model")
    assert model.mode == "pix2pix" and model.tokenizer is None
    init = nn.meta.unbox(pix2pix_task.init_params(c, jax.random.fold_in(jax.random.key(c.seed), 1)))
    rng = jax.random.key(0)
    before = float(jnp.mean(jnp.abs(pix2pix_task.translate_batch(init["gen"], sat, rng, c) - mp)))
    _, out = translate(model, sat, "sat2map", rng)
    after = float(jnp.mean(jnp.abs(out - mp)))
    assert after < 0.7 * before, (before, after)
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    ev = [m for m in lines if "eval/ssim" in m]
    assert ev and all(np.isfinite(ev[-1][k]) for k in ("eval/l1", "eval/psnr", "eval/ssim"))
    assert (run / "samples" / "step_0000040.png").is_file()


def test_translate_cli_writes_pngs_and_refuses_the_other_direction(trained, tmp_path, capsys):
    c, run, data = trained
    sat, mp = _heldout(c, data)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i in range(3):
        Image.fromarray(np.uint8((np.asarray(sat[i]) + 1) * 127.5)).save(tiles / f"t{i}.png")
    out = tmp_path / "out"
    assert cli_main(["translate", "--checkpoint", str(run / "model"), "--direction", "sat2map",
                     str(tiles), "--out", str(out), "--batch-size", "2"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["t0_map.png", "t1_map.png", "t2_map.png"]
    assert np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)
    capsys.readouterr()
    assert cli_main(["translate", "--checkpoint", str(run / "model"), "--direction", "map2sat",
                     str(tiles), "--out", str(out)]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "this pix2pix model translates sat2map only" in err[0], err
    model = earthmapper_jax.load(run / "model")
    with pytest.raises(InputError, match="translates sat2map only"):
        translate(model, mp, "map2sat", jax.random.key(0))
