"""The JAX tokenizer against VAR's PyTorch VQ-VAE (golden numbers in tests/fixtures/var_vae,
made by tests/fixtures/make_var_vae_fixtures.py from VAR's own code)."""

import jax
import numpy as np
import pytest

from earthmapper_jax.tokenizer import load, resize
from earthmapper_jax.tokenizer.convert import convert_var_vae

PATCH_NUMS = (1, 2, 3, 4, 6, 8)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "var_vae" / "golden.npz"))


@pytest.fixture(scope="module")
def tok(fixtures_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("tok") / "vae"
    cfg = convert_var_vae(fixtures_dir / "var_vae" / "vae.pth", dst, image_size=128,
                          patch_nums=PATCH_NUMS)
    assert cfg["ch_mult"] == (1, 1, 2, 2, 4) and cfg["ch"] == 32 and cfg["vocab_size"] == 512
    return load(dst)


def _gt_indices(g):
    return [g[f"idx_{si}"] for si in range(len(PATCH_NUMS))]


def test_resize_matches_torch(golden):
    n = 0
    for key in golden:
        if key.endswith("_in") and key.split("_")[0] in ("area", "bicubic"):
            mode, a, b, _ = key.split("_")
            fn = resize.area_resize if mode == "area" else resize.bicubic_resize
            got = np.asarray(fn(golden[key], int(b)))
            np.testing.assert_allclose(got, golden[key[:-3] + "_out"], atol=1e-5, rtol=0,
                                       err_msg=key)
            n += 1
    assert n >= 20


def test_tokens_match_var(tok, golden):
    idx = tok.encode(golden["images"])
    same = sum(int((np.asarray(a) == golden[f"idx_{si}"]).sum()) for si, a in enumerate(idx))
    total = sum(golden[f"idx_{si}"].size for si in range(len(PATCH_NUMS)))
    assert [a.shape[1] for a in idx] == list(PATCH_NUMS)
    assert all(a.dtype == np.int32 for a in idx)
    assert same / total >= 0.999, f"{same}/{total} token positions equal"


def test_features_fhat_decode_match_var(tok, golden):
    gi = _gt_indices(golden)
    np.testing.assert_allclose(tok.encode_features(golden["images"]), golden["feature"],
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(tok.fhat(gi), golden["fhat"], atol=1e-5, rtol=0)
    dec = np.asarray(tok.decode(gi))
    assert np.abs(dec - golden["decoded"]).max() <= 1e-4
    assert dec.min() >= -1 and dec.max() <= 1
    rec3 = np.asarray(tok.reconstruct(golden["images"], num_scales=3))
    assert np.abs(rec3 - golden["rec_s3"]).max() <= 1e-4


def test_teacher_forcing_inputs_match_var(tok, golden):
    tf = np.asarray(tok.teacher_forcing_inputs(_gt_indices(golden)))
    assert tf.shape == golden["tf_inputs"].shape == (3, sum(p * p for p in PATCH_NUMS) - 1, 8)
    assert np.abs(tf - golden["tf_inputs"]).max() <= 1e-5


def test_next_autoregressive_input_matches_var(tok, golden):
    si, k = int(golden["ar_si"]), len(PATCH_NUMS)
    f_hat, nxt = tok.next_autoregressive_input(si, k, golden["ar_fhat_in"], golden["ar_h"])
    np.testing.assert_allclose(f_hat, golden["ar_fhat_out"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(nxt, golden["ar_next"], atol=1e-5, rtol=0)
    f_hat, nxt = tok.next_autoregressive_input(k - 1, k, golden["ar_last_fhat_in"],
                                               golden["ar_last_h"])
    np.testing.assert_allclose(f_hat, golden["ar_last_fhat_out"], atol=1e-5, rtol=0)
    assert nxt is f_hat or np.array_equal(nxt, f_hat)
    # The embedding VAR feeds back is the codebook row of each sampled id.
    np.testing.assert_allclose(tok.embed(golden[f"idx_{si}"]), golden["ar_h"], atol=0, rtol=0)


def test_training_forward_matches_var(tok, golden):
    fwd = jax.jit(lambda p, x: tok.model.apply({"params": p}, x))
    rec, vq_loss, hits, idx = fwd(tok.params, golden["images"])
    assert abs(float(vq_loss) - float(golden["train_vq_loss"])) <= 1e-5 * max(
        1.0, abs(float(golden["train_vq_loss"])))
    assert np.abs(np.asarray(rec) - golden["train_rec"]).max() <= 1e-4
    np.testing.assert_array_equal(np.asarray(hits).sum(1), [3 * p * p for p in PATCH_NUMS])
