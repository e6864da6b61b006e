"""Tokenizer training pieces: loss/grad plumbing, a short Adam run, metrics, codebook restarts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy.signal import convolve2d

from earthmapper_jax.data.synthetic_city import make_batch
from earthmapper_jax.tokenizer import image_metrics, losses
from earthmapper_jax.tokenizer.discriminator import PatchDiscriminator
from earthmapper_jax.tokenizer.quantizer import MultiScaleQuantizer

# A 2-level VQ-VAE on 16 px images: small enough to compile and train in seconds on CPU.
MICRO = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
             image_size=16, patch_nums=(1, 2, 4, 8))


def _config(**loss):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(MICRO)
    c.loss = losses.default_loss_config()
    c.loss.update(loss)
    return c


def _images(n=8, size=16):
    return make_batch(n, size, seed=3)["sat_image"]


def test_adam_steps_reduce_reconstruction_error():
    config = _config(l1_weight=1.0)
    params = losses.init_params(config, jax.random.key(0))
    assert set(params) == {"vae"}
    x = jnp.asarray(_images())
    tx = optax.adam(2e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, rng):
        (loss, m), g = jax.value_and_grad(losses.loss_fn, has_aux=True)(params, {"image": x}, rng, config)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, m

    first = None
    for i in range(40):
        params, opt, m = step(params, opt, jax.random.key(i))
        first = first or {k: float(v) for k, v in m.items() if k != "hits"}
    last = {k: float(v) for k, v in m.items() if k != "hits"}
    assert m["hits"].shape == (4, 64) and float(m["hits"][0].sum()) == 8  # one code per image
    assert last["rec_l2"] < 0.6 * first["rec_l2"], (first, last)
    assert last["psnr"] > first["psnr"] + 2.0
    assert 0 < last["usage"] <= 1 and all(0 < last[f"usage/s{k}"] <= 1 for k in range(4))
    ev = jax.jit(lambda p: losses.eval_fn(p, {"image": x}, None, config))(params)
    assert np.isfinite(float(ev["psnr"])) and float(ev["psnr"]) > first["psnr"]


def test_vq_loss_gradients_and_straight_through():
    q = MultiScaleQuantizer(vocab_size=64, z_channels=8, patch_nums=(1, 2, 4, 8))
    f = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
    params = nn.meta.unbox(jax.jit(q.init)(jax.random.key(1), f)["params"])

    def vq(p, f):
        return q.apply({"params": p}, f)[1]

    gp, gf = jax.jit(jax.grad(vq, argnums=(0, 1)))(params, f)
    # Codebook and Phi learn from mse(f_hat, sg(f)); the encoder output from the commitment term.
    assert float(jnp.abs(gp["codebook"]).sum()) > 0
    assert float(jnp.abs(gp["phi_0"]["conv"]["kernel"]).sum()) > 0
    assert float(jnp.abs(gf).sum()) > 0
    # Straight-through: f_hat's value is the quantized map, its gradient is the identity to f.
    w = jax.random.normal(jax.random.key(2), f.shape)
    g_st = jax.jit(jax.grad(lambda f: jnp.sum(q.apply({"params": params}, f)[0] * w)))(f)
    np.testing.assert_allclose(g_st, w, atol=1e-6)


def test_gan_term_trains_both_sides_from_one_scalar():
    config = _config(gan_weight=0.1, disc_ch=32, disc_layers=1)
    params = nn.meta.unbox(losses.init_params(config, jax.random.key(2)))
    assert set(params) == {"vae", "disc"}
    x = jnp.asarray(_images(2))
    vg = jax.value_and_grad(lambda p, b: losses.loss_fn(p, b, None, config), has_aux=True)
    (loss, m), g = jax.jit(vg)(params, {"image": x})
    assert {"g_adv", "d_loss"} <= set(m) and np.isfinite(float(loss))
    assert float(jnp.abs(g["disc"]["conv_0"]["kernel"]).sum()) > 0
    assert float(jnp.abs(g["vae"]["decoder"]["conv_out"]["kernel"]).sum()) > 0
    assert PatchDiscriminator(ch=32, num_layers=1).init(jax.random.key(0), x)["params"]


def test_lpips_enabled_without_weights_is_a_clear_error():
    from earthmapper_jax.errors import CheckpointError

    config = _config(lpips_weight=1.0, lpips_vgg_path="/nonexistent/vgg16.pth")
    params = losses.init_params(config, jax.random.key(0))
    with pytest.raises(CheckpointError, match="LPIPS is enabled but the VGG16"):
        losses.loss_fn(params, {"image": jnp.asarray(_images(1))}, None, config)


def test_lpips_module_loads_torch_format_weights(tmp_path):
    from earthmapper_jax.io.pth import save_state_dict
    from earthmapper_jax.tokenizer.lpips import VGG_STAGES, VGG_WIDTHS, load_lpips, lpips_distance

    rng = np.random.default_rng(0)
    vgg, cin = {}, 3
    for layers, width in zip(VGG_STAGES, VGG_WIDTHS):
        for i in layers:
            vgg[f"features.{i}.weight"] = (rng.normal(size=(width, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
            vgg[f"features.{i}.bias"] = np.zeros(width, np.float32)
            cin = width
    lin = {f"lin{k}.model.1.weight": rng.uniform(0, 1, (1, w, 1, 1)).astype(np.float32)
           for k, w in enumerate(VGG_WIDTHS)}
    save_state_dict(tmp_path / "vgg.pth", vgg)
    save_state_dict(tmp_path / "lin.pth", lin)
    p = load_lpips(str(tmp_path / "vgg.pth"), str(tmp_path / "lin.pth"))
    x = jnp.asarray(_images(2, 32))
    d_same = lpips_distance(p, x, x)
    d_diff = lpips_distance(p, x, x[::-1])
    assert d_same.shape == (2,) and float(jnp.abs(d_same).max()) < 1e-6
    assert float(d_diff.min()) > 0


def test_restart_dead_codes_replaces_only_stale_codes():
    config = _config()
    params = nn.meta.unbox(losses.init_params(config, jax.random.key(0)))
    age = jnp.zeros(64, jnp.int32)
    hits = jnp.zeros((4, 64)).at[1, :10].set(3.0)
    for _ in range(5):
        age = losses.update_code_age(age, hits)
    assert int(age[0]) == 0 and int(age[20]) == 5
    feats = jax.random.normal(jax.random.key(3), (100, 8)) * 7.0
    new, age2, n = losses.restart_dead_codes(params, age, feats, jax.random.key(4), max_age=5)
    old_cb, new_cb = params["vae"]["quantize"]["codebook"], new["vae"]["quantize"]["codebook"]
    assert int(n) == 54 and int(age2.max()) == 0
    np.testing.assert_array_equal(new_cb[:10], old_cb[:10])
    rows = np.asarray(new_cb[10:])
    # Every restarted code is one of the features, and they are distinct.
    d = np.abs(rows[:, None, :] - np.asarray(feats)[None]).sum(-1).min(1)
    assert d.max() < 1e-6 and len({tuple(r) for r in rows}) == 54


def test_psnr_and_ssim_match_reference_definitions():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    mse = np.mean(((x - y) / 2) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(image_metrics.psnr(x, y), 10 * np.log10(1 / mse), rtol=1e-5)
    # Straightforward 2-D 'valid' SSIM (Wang et al. 2004) with an 11x11 Gaussian, sigma 1.5.
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    ref = []
    for b in range(2):
        vals = []
        for c in range(3):
            a, bb = (x[b, :, :, c] + 1) / 2, (y[b, :, :, c] + 1) / 2
            f = lambda z: convolve2d(z, w[::-1, ::-1], mode="valid")  # noqa: E731
            ma, mb = f(a), f(bb)
            va, vb, cab = f(a * a) - ma**2, f(bb * bb) - mb**2, f(a * bb) - ma * mb
            s = ((2 * ma * mb + 1e-4) * (2 * cab + 9e-4)) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4))
            vals.append(s.mean())
        ref.append(np.mean(vals))
    np.testing.assert_allclose(image_metrics.ssim(x, y), ref, rtol=1e-4)
    np.testing.assert_allclose(image_metrics.ssim(x, x), [1.0, 1.0], rtol=1e-5)
