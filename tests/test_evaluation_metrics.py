"""Evaluation metrics against the reference packages (golden numbers made by
tests/fixtures/make_evaluation_fixtures.py with pytorch-fid, torch-fidelity and lpips on
random weights regenerated here from the same seeds), scikit-image live, and sanity checks.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures.make_evaluation_fixtures import (
    checksum, random_features, random_state_dict, smooth_images)
from skimage.metrics import structural_similarity

from earthmapper_jax.errors import CheckpointError, DataError, InputError
from earthmapper_jax.evaluation import accumulators, distributions, inception, inception_weights, pixels
from earthmapper_jax.io.pth import save_state_dict
from earthmapper_jax.tokenizer import image_metrics, lpips, resize


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    d = fixtures_dir / "evaluation"
    return json.loads((d / "meta.json").read_text()), np.load(d / "golden.npz")


def _regenerate(layout, seed, sha):
    sd = random_state_dict(layout, seed)
    assert checksum(sd) == sha, "numpy's random stream changed: regenerate the fixtures"
    return sd


@pytest.fixture(scope="module")
def inception_params(golden, tmp_path_factory):
    # Through the real file path: a .pth in pytorch-fid's layout, read by load_inception.
    meta = golden[0]["inception"]
    sd = _regenerate(meta["layout"], meta["seed"], meta["sha256"])
    assert {k: tuple(s) for k, s, _ in meta["layout"]} == inception_weights.checkpoint_shapes()
    path = tmp_path_factory.mktemp("inception") / inception_weights.FILE_NAME
    save_state_dict(path, sd)
    return inception.load_inception(str(path))


def _relative(a, b):
    return max(np.abs(a - b).max() / np.abs(b).max(), np.linalg.norm(a - b) / np.linalg.norm(b))


def test_inception_features_match_pytorch_fid(golden, inception_params):
    meta, z = golden
    for i in range(meta["inception"]["groups"]):  # 256², 299², 341x320 and 64x80 inputs
        images = z[f"inception_images_{i}"].astype(np.float32) / 255.0
        feats = np.asarray(inception.inception_features(inception_params, images))
        ref = z[f"inception_features_{i}"]
        assert feats.shape == ref.shape and feats.shape[1] == inception.FEATURE_DIM
        assert _relative(feats, ref) <= 1e-4, (images.shape, _relative(feats, ref))


def test_bilinear_matrix_is_pytorch_bilinear():
    np.testing.assert_array_equal(resize.bilinear_matrix(299, 299), np.eye(299, dtype=np.float32))
    m = resize.bilinear_matrix(4, 8)  # upsampling x2: PyTorch's weights 1, .75/.25, ...
    np.testing.assert_allclose(m[:3], [[1, 0, 0, 0], [0.75, 0.25, 0, 0], [0.25, 0.75, 0, 0]])
    np.testing.assert_allclose(m[-1], [0, 0, 0, 1])
    d = resize.bilinear_matrix(8, 3)  # downsampling: two taps, no antialiasing
    assert (np.count_nonzero(d, axis=1) <= 2).all()
    np.testing.assert_allclose(d.sum(1), 1.0, rtol=1e-6)


def test_inception_loader_errors_name_file_source_and_flag(tmp_path):
    with pytest.raises(CheckpointError) as e:
        inception.load_inception(str(tmp_path / "missing.pth"), flag="--inception-weights")
    msg = str(e.value)
    assert inception_weights.FILE_NAME in msg and inception_weights.URL in msg
    assert "--inception-weights" in msg and "missing.pth" in msg
    shapes = inception_weights.checkpoint_shapes()
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
    with pytest.raises(CheckpointError, match="torchvision's ImageNet Inception"):
        inception_weights.convert_state_dict(sd)
    del sd["fc.weight"], sd["Mixed_7c.branch_pool.bn.running_var"]
    with pytest.raises(CheckpointError, match="Mixed_7c.branch_pool.bn.running_var is missing"):
        inception_weights.convert_state_dict(sd)


@pytest.fixture(scope="module")
def feature_sets(golden):
    out = {}
    for name, f in golden[0]["features"].items():
        # No exact sha256 of these: they pass through a BLAS matmul, whose last bits depend on
        # the threads it gets (a run pinned to one core differs from a 2-core run). A changed
        # random stream would move FID/KID/PR by orders of magnitude beyond the tests' 1e-6.
        g, r = random_features(f["seed"], f["n_generated"], f["n_real"], f["dim"])
        out[name] = (g, r, f)
    return out


@pytest.mark.parametrize("name", ["gauss256", "lowrank512", "kid_defaults"])
def test_fid_matches_pytorch_fid(feature_sets, name):
    g, r, ref = feature_sets[name]
    # lowrank512 has fewer samples than dimensions (singular covariances, as 1098 vs 2048).
    assert distributions.frechet_distance_from_features(g, r) == pytest.approx(ref["fid"], rel=1e-6)
    streamed = []
    for feats, chunks in ((g, 7), (r, 5)):
        s = distributions.FeatureStats(feats.shape[1])
        for c in np.array_split(feats, chunks):
            s.update(c)
        s = distributions.FeatureStats.from_state(s.state())  # as a cache / resume reads it
        mu, cov = s.mean_cov()
        np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
        streamed.append((mu, cov))
    assert distributions.frechet_distance(*streamed[0], *streamed[1]) == pytest.approx(ref["fid"], rel=1e-6)


@pytest.mark.parametrize("name", ["gauss256", "lowrank512", "kid_defaults"])
def test_kid_matches_torch_fidelity(feature_sets, name, monkeypatch):
    g, r, ref = feature_sets[name]
    kw = {} if name == "kid_defaults" else dict(subset_size=ref["kid_subset_size"], subsets=ref["kid_subsets"])
    mean, std = distributions.kid(g, r, **kw)
    assert mean == pytest.approx(ref["kid_mean"], rel=1e-10)
    assert std == pytest.approx(ref["kid_std"], rel=1e-10)
    if name != "kid_defaults":  # per-subset kernels (the path for large splits): same numbers
        monkeypatch.setattr(distributions, "KID_FULL_KERNEL_MAX", 0)
        mean2, std2 = distributions.kid(g, r, **kw)
        assert (mean2, std2) == pytest.approx((ref["kid_mean"], ref["kid_std"]), rel=1e-10)


@pytest.mark.parametrize("name", ["gauss256", "lowrank512", "kid_defaults"])
def test_precision_recall_match_torch_fidelity(feature_sets, name):
    g, r, ref = feature_sets[name]
    for block in (1024, 37):
        p, rec = distributions.precision_recall(g, r, block=block)
        # torch-fidelity reports float32 fractions; one sample is >= 1/1100.
        assert p == pytest.approx(ref["precision"], abs=1e-6)
        assert rec == pytest.approx(ref["recall"], abs=1e-6)


def test_distribution_metrics_reject_bad_input(feature_sets):
    g, r, _ = feature_sets["lowrank512"]
    with pytest.raises(InputError, match="KID subset size 1000"):
        distributions.kid(g, r)
    with pytest.raises(InputError, match="equal d"):
        distributions.precision_recall(g, r[:, :10])
    with pytest.raises(InputError, match="at least 2"):
        distributions.FeatureStats(4).mean_cov()


def test_accumulators_stream_cache_and_score_like_the_references(feature_sets, tmp_path):
    g, r, ref = feature_sets["kid_defaults"]  # 1100 / 1050 samples: KID's default 100 x 1000
    sets = []
    for feats in (g, r):
        fs = accumulators.FeatureSet(dim=feats.shape[1])
        for chunk in np.array_split(feats, 9):
            fs.update(chunk)
        fs.save(tmp_path / "cache.npz")
        sets.append(accumulators.FeatureSet.load(tmp_path / "cache.npz"))
    out = accumulators.distribution_metrics(*sets)
    # Features are kept as float32 (pool3 features are float32 anyway) while the references
    # used the float64 arrays: measured 5e-10 (FID) and 1.3e-9 (KID) relative.
    assert out["fid"] == pytest.approx(ref["fid"], rel=1e-7)
    assert out["kid"] == pytest.approx(ref["kid_mean"], rel=1e-6)
    assert out["kid_scaled"] == pytest.approx(100 * out["kid"]) and out["kid_subset_size"] == 1000
    assert (out["precision"], out["recall"]) == pytest.approx((ref["precision"], ref["recall"]), abs=1e-6)
    assert (out["n_generated"], out["n_real"]) == (1100, 1050)
    fid_only = accumulators.FeatureSet(dim=g.shape[1], keep=False)
    fid_only.update(g)
    fid_only.save(tmp_path / "stats.npz")
    fid_only = accumulators.FeatureSet.load(tmp_path / "stats.npz")
    small = accumulators.distribution_metrics(fid_only, sets[1])
    assert set(small) == {"fid", "n_generated", "n_real"} and small["fid"] == pytest.approx(out["fid"])
    with pytest.raises(DataError, match="keep=False"):
        fid_only.features()
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="delete it to recompute"):
        accumulators.FeatureSet.load(tmp_path / "bad.npz")
    paired = accumulators.PairedMeans()
    paired.update(ssim=[0.5, 0.7], psnr=np.array([20.0, 30.0]))
    paired = accumulators.PairedMeans.from_state(paired.state())
    paired.update(ssim=[0.9], psnr=[25.0])
    assert paired.means() == pytest.approx({"ssim": 0.7, "psnr": 25.0, "n": 3})


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package(golden, net, tmp_path):
    meta, z = golden
    m = meta["lpips"][net]
    backbone = _regenerate(m["backbone_layout"], m["backbone_seed"], m["backbone_sha256"])
    lin = _regenerate(m["lin_layout"], m["lin_seed"], m["lin_sha256"])
    backbone["classifier.1.bias"] = np.zeros(4, np.float32)  # the real files hold the classifier too
    save_state_dict(tmp_path / "backbone.pth", backbone)
    save_state_dict(tmp_path / "lin.pth", lin)
    params = lpips.load_lpips(str(tmp_path / "backbone.pth"), str(tmp_path / "lin.pth"), net)
    x = z[f"lpips_{net}_x"].astype(np.float32) / 127.5 - 1.0
    y = z[f"lpips_{net}_y"].astype(np.float32) / 127.5 - 1.0
    d = np.asarray(lpips.lpips_distance(params, x, y, net=net, precision=jax.lax.Precision.HIGHEST))
    np.testing.assert_allclose(d, z[f"lpips_{net}"], rtol=1e-5, atol=1e-5)


def test_lpips_missing_weights_names_file_source_and_flag(tmp_path):
    with pytest.raises(CheckpointError) as e:
        lpips.load_lpips(str(tmp_path / "nope.pth"), "", "alex", flags=("--lpips-backbone", "--lpips-lin"))
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "download.pytorch.org" in msg and "--lpips-backbone" in msg
    save_state_dict(tmp_path / "alex.pth", {"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
    with pytest.raises(CheckpointError) as e:
        lpips.load_lpips(str(tmp_path / "alex.pth"), "", "alex", flags=("--lpips-backbone", "--lpips-lin"))
    assert "weights/v0.1/alex.pth" in str(e.value) and "--lpips-lin" in str(e.value)


def _images(n, h, w, seed=0):
    return smooth_images(np.random.default_rng(seed), n, h, w).astype(np.float64) / 255.0


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 40, 23, 3), (2, 32, 32, 1)])
def test_ssim_psnr_rmse_match_scikit_image_and_numpy(shape):
    x = _images(shape[0], shape[1], shape[2])[..., :shape[3]]
    rng = np.random.default_rng(1)
    for y in (np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1), 0.7 * x + 0.1, np.full_like(x, 0.5)):
        ref = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=-1, data_range=1) for a, b in zip(x, y)]
        np.testing.assert_allclose(pixels.ssim(x, y), ref, rtol=0, atol=1e-5)
        mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
        np.testing.assert_allclose(pixels.psnr(x, y), 10 * np.log10(1 / mse), rtol=1e-5)
        np.testing.assert_allclose(pixels.rmse(x, y), np.sqrt(mse), rtol=1e-5)
    np.testing.assert_allclose(pixels.ssim(x, x), 1.0, atol=1e-6)
    assert np.all(np.asarray(pixels.psnr(x, x)) == pytest.approx(120.0))


def test_tokenizer_image_metrics_are_the_pixels_metrics_on_minus_one_to_one():
    x = _images(2, 24, 20)
    y = np.clip(x + np.random.default_rng(2).normal(0, 0.1, x.shape), 0, 1)
    np.testing.assert_allclose(image_metrics.ssim(2 * x - 1, 2 * y - 1), pixels.ssim(x, y), rtol=1e-6)
    np.testing.assert_allclose(image_metrics.psnr(2 * x - 1, 2 * y - 1), pixels.psnr(x, y), rtol=1e-6)
    with pytest.raises(InputError, match="H, W >= 11"):
        pixels.ssim(x[:, :8], y[:, :8])


def test_ssim_and_psnr_rank_three_corruptions():
    x = _images(3, 64, 64, seed=3)
    rng = np.random.default_rng(4)
    blur = sum(np.roll(np.roll(x, dy, 1), dx, 2) for dy in range(-2, 3) for dx in range(-2, 3)) / 25
    mild, medium, severe = (np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1), blur,
                            np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1))
    for metric, better in ((pixels.ssim, np.greater), (pixels.psnr, np.greater), (pixels.rmse, np.less)):
        a, b, c = (np.asarray(metric(x, y)) for y in (mild, medium, severe))
        assert better(a, b).all() and better(b, c).all(), (metric.__name__, a, b, c)


def _gaussian_blur(x, sigma):
    r = int(3 * sigma + 0.5)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    pad = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(w * pad[:, i:i + x.shape[1]] for i, w in enumerate(g))
    return sum(w * rows[:, :, i:i + x.shape[2]] for i, w in enumerate(g))


@pytest.fixture(scope="module")
def sanity_features(inception_params):
    """Inception features (random weights) of 6 real images, 3 blur levels of them, noise."""
    real = _images(6, 128, 128, seed=5)
    sets = {"real": real, **{f"blur{s}": _gaussian_blur(real, s) for s in (1, 2, 4)},
            "noise": np.random.default_rng(6).uniform(0, 1, real.shape)}
    batch = np.concatenate(list(sets.values())).astype(np.float32)
    feats = np.asarray(inception.inception_features(inception_params, jnp.asarray(batch)), np.float64)
    return {k: feats[6 * i:6 * (i + 1)] for i, k in enumerate(sets)}


def test_fid_is_zero_on_itself_and_grows_with_blur(sanity_features, feature_sets):
    f = sanity_features
    scale = distributions.frechet_distance_from_features(f["noise"], f["real"])
    assert abs(distributions.frechet_distance_from_features(f["real"], f["real"])) < 1e-9 * scale
    _, r, _ = feature_sets["gauss256"]
    s = distributions.FeatureStats(r.shape[1])
    s.update(r)
    assert abs(distributions.frechet_distance(*s.mean_cov(), *s.mean_cov())) < 1e-9
    fids = [distributions.frechet_distance_from_features(f[f"blur{k}"], f["real"]) for k in (1, 2, 4)]
    assert 0 < fids[0] < fids[1] < fids[2] < scale, (fids, scale)


def test_precision_falls_for_noise_and_recall_for_copies(sanity_features):
    f = sanity_features
    p_good, r_good = distributions.precision_recall(f["blur1"], f["real"])
    p_noise, _ = distributions.precision_recall(f["noise"], f["real"])
    _, r_copies = distributions.precision_recall(np.repeat(f["real"][:1], 6, 0), f["real"])
    assert p_noise < p_good and p_noise <= 0.2, (p_noise, p_good)
    assert r_copies < r_good and r_copies <= 0.5, (r_copies, r_good)
