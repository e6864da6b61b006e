"""The multi-scale residual quantizer against its rules restated in numpy (fast, small shapes):
which Phi each scale uses, nearest-code ties, the residual loop (area down, nearest code,
bicubic up, Phi, subtract), VAR's VQ loss and straight-through estimator, the code hits, the
teacher-forcing inputs and the autoregressive step. VAR parity with real VAR code is in
tests/test_tokenizer_parity.py; this file pins each rule on its own."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.tokenizer import quantizer as Q
from earthmapper_jax.tokenizer.resize import area_resize, bicubic_resize

PN = (1, 2, 4)
V, Z = 8, 3


def test_how_many_phis():
    assert Q.num_phis(10, 0) == 10          # one per scale
    assert Q.num_phis(10, 0, 6) == 6        # ... unless VAR's default count is given
    assert Q.num_phis(10, 1) == 1           # shared
    assert Q.num_phis(10, 4) == 4 and Q.num_phis(10, 3) == 3


def test_phi_ticks_by_hand():
    # n = 4 ticks at 1/12, 4/12, 7/12, 10/12; 5 scales at 0, .25, .5, .75, 1
    assert Q.phi_index_table(5, 4) == (0, 1, 2, 2, 3)
    # n = 2 ticks at 1/4, 3/4; scale 1 of 3 sits at 0.5, a tie: the first tick wins
    assert Q.phi_index_table(3, 2) == (0, 0, 1)
    # n = 3 ticks at 1/6, 1/2, 5/6; scales at 1/3 and 2/3 tie between two ticks: the first wins
    assert Q.phi_index_table(4, 3) == (0, 0, 1, 2)
    assert Q.phi_index_table(3, 0, 2) == (0, 0, 1)
    assert Q.phi_index_table(1, 4) == (0,) and Q.phi_index_table(1, 0) == (0,)
    assert Q.phi_index_table(4, 1) == (0, 0, 0, 0)


def test_nearest_code_ties_take_the_first_index():
    cb = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    z = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0], [-3.0, 0.0]])
    got = Q.nearest_codes(z, cb)
    np.testing.assert_array_equal(got, [0, 0, 1, 3])
    assert got.dtype == jnp.int32
    # cosine ignores the norm: [0, 2] is code 1, [-3, 0] code 3; a zero row does not divide by 0
    np.testing.assert_array_equal(Q.nearest_codes(z, 5.0 * cb, using_znorm=True), [0, 0, 1, 3])
    assert Q.nearest_codes(jnp.zeros((1, 2)), cb, using_znorm=True).shape == (1,)
    # L2, not cosine: a short code close by beats a long one in the same direction
    cb2 = jnp.array([[10.0, 0.0], [0.9, 0.3]])
    np.testing.assert_array_equal(Q.nearest_codes(jnp.array([[1.0, 0.0]]), cb2), [1])
    np.testing.assert_array_equal(Q.nearest_codes(jnp.array([[1.0, 0.0]]), cb2, using_znorm=True), [0])


def _quantizer(quant_resi=0.5, share=2, beta=0.25):
    return Q.MultiScaleQuantizer(vocab_size=V, z_channels=Z, patch_nums=PN, quant_resi=quant_resi,
                                 share_quant_resi=share, beta=beta)


@pytest.fixture(scope="module")
def setup():
    q = _quantizer()
    f = jax.random.normal(jax.random.key(0), (2, 4, 4, Z))
    params = nn.meta.unbox(q.init(jax.random.key(1), f)["params"])
    # move the Phi convs off their init so that which Phi a scale uses matters
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 * jax.random.normal(jax.random.key(len(str(path))), x.shape), params)
    return q, params, np.asarray(f)


def _phi(params, i, h, r=0.5):
    conv = jax.lax.conv_general_dilated(
        h, params[f"phi_{i}"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    return (1 - r) * h + r * (conv + params[f"phi_{i}"]["conv"]["bias"])


def _by_hand(params, f):
    """The residual loop written out: returns indices, cumulative f_hats."""
    cb = np.asarray(params["codebook"])
    table = Q.phi_index_table(len(PN), 2)
    rest, fhat = f.copy(), np.zeros_like(f)
    idx_all, fhats = [], []
    for si, pn in enumerate(PN):
        z = np.asarray(area_resize(jnp.asarray(rest), pn)) if si < len(PN) - 1 else rest
        d = ((z.reshape(-1, Z)[:, None] - cb[None]) ** 2).sum(-1)
        idx = d.argmin(1).reshape(f.shape[0], pn, pn)
        h = cb[idx]
        if si < len(PN) - 1:
            h = np.asarray(bicubic_resize(jnp.asarray(h), PN[-1]))
        h = np.asarray(_phi(params, table[si], jnp.asarray(h)))
        fhat, rest = fhat + h, rest - h
        idx_all.append(idx)
        fhats.append(fhat)
    return idx_all, fhats


def test_residual_loop_by_hand(setup):
    q, params, f = setup
    idx, fhats = _by_hand(params, f)
    got = q.apply({"params": params}, jnp.asarray(f), method=q.encode_to_indices)
    for a, b in zip(got, idx):
        np.testing.assert_array_equal(a, b)
    got_f = q.apply({"params": params}, jnp.asarray(f), method=q.encode_to_fhats)
    for a, b in zip(got_f, fhats):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # detokenizing the first k scales gives the k-th cumulative f_hat
    for k in (1, 3):
        np.testing.assert_allclose(q.apply({"params": params}, idx[:k], method=q.indices_to_fhat),
                                   fhats[k - 1], rtol=1e-4, atol=1e-5)


def test_training_forward_loss_hits_and_straight_through(setup):
    q, params, f = setup
    idx, fhats = _by_hand(params, f)
    f_hat_st, loss, hits, indices = q.apply({"params": params}, jnp.asarray(f))
    np.testing.assert_allclose(f_hat_st, fhats[-1], rtol=1e-4, atol=1e-5)
    # VAR: mean over scales of beta·mse(sg(f_hat_k), f) + mse(f_hat_k, sg(f)); the values add
    want = np.mean([(0.25 + 1.0) * np.mean((fh - f) ** 2) for fh in fhats])
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    want_hits = np.stack([np.bincount(i.reshape(-1), minlength=V) for i in idx]).astype(np.float32)
    np.testing.assert_array_equal(hits, want_hits)
    for a, b in zip(indices, idx):
        np.testing.assert_array_equal(a, b)

    # straight-through: d f_hat_st / d f is the identity
    g = jax.grad(lambda x: jnp.sum(q.apply({"params": params}, x)[0] * 3.0))(jnp.asarray(f))
    np.testing.assert_allclose(g, 3.0, rtol=1e-6)
    # the encoder side of the loss is beta · d mse(sg(f_hat_k), f) / d f, averaged over scales
    g = jax.grad(lambda x: q.apply({"params": params}, x)[1])(jnp.asarray(f))
    want = np.mean([0.25 * 2 * (f - fh) / f.size for fh in fhats], axis=0)
    np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-7)
    # the codebook learns only from the second term (its weight does not carry beta)
    gp = jax.grad(lambda p: q.apply({"params": p}, jnp.asarray(f))[1])(params)
    gp_b = jax.grad(lambda p: _quantizer(beta=0.9).apply({"params": p}, jnp.asarray(f))[1])(params)
    np.testing.assert_allclose(gp["codebook"], gp_b["codebook"], rtol=1e-5, atol=1e-8)
    assert float(jnp.abs(gp["codebook"]).sum()) > 0


def test_teacher_forcing_inputs_by_hand(setup):
    q, params, f = setup
    idx, fhats = _by_hand(params, f)
    got = q.apply({"params": params}, idx, method=q.teacher_forcing_inputs)
    want = np.concatenate([np.asarray(area_resize(jnp.asarray(fhats[si]), PN[si + 1])).reshape(2, -1, Z)
                           for si in range(len(PN) - 1)], 1)
    assert got.shape == (2, sum(p * p for p in PN) - 1, Z)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_autoregressive_step_matches_the_loop(setup):
    q, params, f = setup
    idx, fhats = _by_hand(params, f)
    cb = np.asarray(params["codebook"])
    fhat = jnp.zeros_like(jnp.asarray(f))
    for si, pn in enumerate(PN):
        fhat, nxt = q.apply({"params": params}, si, len(PN), fhat, jnp.asarray(cb[idx[si]]),
                            method=q.next_autoregressive_input)
        np.testing.assert_allclose(fhat, fhats[si], rtol=1e-4, atol=1e-5)
        if si < len(PN) - 1:
            np.testing.assert_allclose(nxt, area_resize(jnp.asarray(fhats[si]), PN[si + 1]), rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(nxt, fhat)


def test_phi_ratio_and_no_phi():
    h = jax.random.normal(jax.random.key(2), (1, 4, 4, Z))
    phi = Q.Phi(-0.5)  # VAR takes |quant_resi|
    p = nn.meta.unbox(phi.init(jax.random.key(3), h)["params"])
    p = jax.tree.map(lambda x: x + 0.1, p)
    np.testing.assert_allclose(phi.apply({"params": p}, h), _phi({"phi_0": p}, 0, h), rtol=1e-4, atol=1e-5)
    q = _quantizer(quant_resi=0.0)
    params = nn.meta.unbox(q.init(jax.random.key(1), jnp.zeros((1, 4, 4, Z)))["params"])
    assert set(params) == {"codebook"}
    np.testing.assert_array_equal(q.apply({"params": params}, 1, h, method=q.apply_phi), h)


def test_codebook_init_conventions():
    def cb(e):
        q = Q.MultiScaleQuantizer(vocab_size=64, z_channels=4, patch_nums=(1, 2), codebook_init_scale=e)
        return np.asarray(nn.meta.unbox(q.init(jax.random.key(0), jnp.zeros((1, 2, 2, 4)))["params"])["codebook"])

    u = cb(-1.0)  # VAR's eini < 0: uniform in ±|e|/V
    assert u.min() >= -1 / 64 and u.max() <= 1 / 64 and u.min() < -0.5 / 64 and u.max() > 0.5 / 64
    t = cb(0.02)  # > 0: truncated normal of that std
    assert 0.01 < t.std() < 0.03 and np.abs(t).max() <= 2 * 0.02 + 1e-6
    n = cb(0.0)   # torch nn.Embedding's default N(0, 1)
    assert 0.8 < n.std() < 1.2
