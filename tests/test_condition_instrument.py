"""The condition-use instrument (evaluation/condition.py): it must tell a model that ignores
its condition from one that copies it, on constructed models whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.data import synthetic_city as synthetic
from earthmapper_jax.evaluation import condition as C
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.layout import SAT
from earthmapper_jax.scales import seq_len
from earthmapper_jax.tokenizer.model import build as build_tokenizer
from earthmapper_jax import tokenizer as tok_lib

PNS = (1, 2, 3, 4)
V = 16
N = 48


def _pairs(n=N, seed=0):
    """Satellite tokens at random; the map token at each position is a fixed bijection of the
    satellite token there, so each half determines the other exactly."""
    rng = np.random.default_rng(seed)
    sat = rng.integers(0, V, (n, seq_len(PNS)))
    return sat, (5 * sat + 3) % V, rng.normal(size=(n, 2)).astype(np.float32)


def _ignorer(coords, sat, mp, cond_m, null_cond):
    """Logits of the per-position frequencies: the same whatever the condition."""
    return jnp.zeros((sat.shape[0], sat.shape[1], V))


def _oracle(coords, sat, mp, cond_m, null_cond):
    """Logits of a lookup of the co-located condition token (uniform without a condition)."""
    cond = jnp.asarray(sat if cond_m == SAT else mp)
    target = (5 * cond + 3) % V if cond_m == SAT else (13 * (cond - 3)) % V  # 13 = 5⁻¹ mod 16
    logits = 12.0 * jax.nn.one_hot(target, V)
    return jnp.zeros_like(logits) if null_cond else logits


def _report(fn, n=N):
    sat, mp, coords = _pairs(n)
    nll = C.teacher_forced(fn, coords, sat, mp, batch_size=16)
    tr_sat, tr_mp, _ = _pairs(200, seed=1)
    return C.condition_report(nll, PNS, {"sat": tr_sat, "map": tr_mp}, {"sat": sat, "map": mp}, V)


def test_a_model_that_ignores_its_condition_fails_the_target():
    rep = _report(_ignorer)
    ok, fails = C.meets_target(rep)
    assert not ok and len(fails) == 2 * (len(PNS) - 1)
    for d in C.DIRECTIONS:
        np.testing.assert_allclose(rep[d]["gain"], 0.0, atol=1e-6)
        assert rep[d]["gain_all_ci"][0] <= 0.0 <= rep[d]["gain_all_ci"][1]
        # it is exactly the uniform model: no better than the token frequencies
        np.testing.assert_allclose(rep[d]["ce_real"], np.log(V), rtol=1e-5)
        assert min(np.subtract(rep[d]["ce_unigram"], rep[d]["ce_real"])) > -0.1


def test_a_model_that_copies_its_condition_passes_the_target():
    rep = _report(_oracle)
    ok, fails = C.meets_target(rep)
    assert ok, fails
    for d in C.DIRECTIONS:
        r = rep[d]
        assert all(lo > 1.0 for lo, _ in r["gain_ci"])           # nats per token, every scale
        assert max(r["ce_real"]) < 0.01 < 2.0 < min(r["ce_shuffled"])
        np.testing.assert_allclose(r["ce_none"], np.log(V), rtol=1e-5)
        assert r["ce_real_all"] < min(r["ce_unigram"]) and r["n_tiles"] == N


def test_a_model_that_uses_only_some_scales_fails_at_the_others():
    def coarse_only(coords, sat, mp, cond_m, null_cond):
        lg = _oracle(coords, sat, mp, cond_m, null_cond)
        return lg.at[:, 5:].set(0.0)  # scales 0-1 (1 + 4 tokens) copied, 2-3 ignored
    ok, fails = C.meets_target(_report(coarse_only))
    assert not ok and sorted({k for _, k, _ in fails}) == [2, 3]


def test_batches_never_leave_a_tile_without_another_condition():
    assert C._batches(33, 16) == [(0, 16), (16, 33)]
    assert C._batches(5, 2) == [(0, 2), (2, 5)]
    assert all(p != i for i, p in enumerate(C.derangement(7)))
    lo, hi = C.bootstrap_ci(np.r_[np.zeros(50), np.ones(50)])
    assert lo < 0.5 < hi and hi - lo < 0.3


def test_earthmapper_adapter_runs_every_branch():
    """A random tiny EarthMapper through earthmapper_logits_fn: finite figures per scale, the
    null branch differs from the real one, a condition equal in every tile has no gain."""
    tcfg = dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, using_sa=False, using_mid_sa=False,
                vocab_size=V, z_channels=4, image_size=8, patch_nums=PNS)
    tok_params = tok_lib.init_params(tcfg, jax.random.key(0))
    mc = em.model_config("tiny", patch_nums=PNS, vocab_size=V, cvae=4, depth=1, embed_dim=32,
                         num_heads=1, si_layer=0, si_weight=0.0, init_adaln_gamma=1.0)
    params = em.init_params(mc, jax.random.key(1))
    fn = C.earthmapper_logits_fn(em.build(mc), params, build_tokenizer(tcfg), tok_params)
    sat, mp, coords = _pairs(6)
    nll = C.teacher_forced(fn, coords, sat, mp, batch_size=6)
    rep = C.condition_report(nll, PNS)
    for d in C.DIRECTIONS:
        assert np.isfinite(rep[d]["ce_real"]).all() and len(rep[d]["gain_ci"]) == len(PNS)
        assert not np.allclose(nll[d]["none"], nll[d]["real"])
    same = np.repeat(sat[:1], 6, 0), np.repeat(mp[:1], 6, 0)
    nll = C.teacher_forced(fn, coords, *same, batch_size=6)
    for d in C.DIRECTIONS:
        np.testing.assert_allclose(nll[d]["shuffled"], nll[d]["real"], atol=1e-5)
    # the eval hook's traced batch figures agree with the host-side ones
    tok_module = build_tokenizer(tcfg)
    logits_of = lambda s, m, cm, null: C.earthmapper_target_logits(  # noqa: E731
        em.build(mc), params, tok_module, tok_params, coords, s, m, cm, null)
    gains = jax.jit(lambda s, m: C.traced_gains(logits_of, s, m))(sat, mp)
    assert set(gains) == {f"cond_gain{x}_{d}" for x in ("", "_none") for d in C.DIRECTIONS}
    nll = C.teacher_forced(fn, coords, sat, mp, batch_size=6)
    for d in C.DIRECTIONS:
        want = nll[d]["shuffled"].mean() - nll[d]["real"].mean()
        np.testing.assert_allclose(float(gains[f"cond_gain_{d}"]), want, atol=1e-5)


def _city(n, size=32, seed=0):
    sat, mp = [], []
    for i in range(n):
        s = synthetic.pair_seed(seed, i)
        lay = synthetic.make_layout(s)
        sat.append(synthetic.render_satellite(lay, size, s))
        mp.append(synthetic.render_map(lay, size))
    f = lambda x: np.stack(x).astype(np.float32) / 127.5 - 1.0  # noqa: E731
    return f(sat), f(mp)


def test_layout_gap_sees_layout_and_only_layout():
    sat, mp = _city(40)
    rng = np.random.default_rng(0)
    noisy = np.clip(mp + rng.normal(0, 0.3, mp.shape), -1, 1)
    follows = C.layout_gap(noisy, mp)
    other_tiles = C.layout_gap(_city(40, seed=7)[1], mp)
    for name in C.SIMILARITIES:
        assert follows[name]["ci"][0] > 0.05, (name, follows[name])
        lo, hi = other_tiles[name]["ci"]
        assert lo < 0.05 and abs(other_tiles[name]["gap"]) < 0.1, (name, other_tiles[name])
    # blur-robust: a blurred copy still follows its layout by block correlation
    blurred = np.repeat(np.repeat(mp.reshape(40, 8, 4, 8, 4, 3).mean((2, 4)), 4, 1), 4, 2)
    assert C.layout_gap(blurred, mp)["block_corr"]["ci"][0] > 0.3


def test_modality_classifier_is_calibrated_on_real_tiles():
    sat, mp = _city(64)
    clf = C.ModalityClassifier.fit(sat, mp)
    assert clf.accuracy >= 0.95
    ts, tm = _city(32, seed=3)
    assert clf.share_right(ts, "sat") >= 0.95 and clf.share_right(tm, "map") >= 0.95
    assert clf.share_right(tm, "sat") <= 0.05


def test_training_eval_hook_logs_the_conditioning_gains():
    import ml_collections
    from earthmapper_jax.train import earthmapper_task as emt
    tcfg = dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, using_sa=False, using_mid_sa=False,
                vocab_size=V, z_channels=4, image_size=8, patch_nums=PNS)
    mc = em.model_config("tiny", patch_nums=PNS, vocab_size=V, cvae=4, depth=1, embed_dim=32,
                         num_heads=1, si_layer=0, si_weight=0.0)
    config = ml_collections.ConfigDict({"model": mc})
    frozen = emt.Frozen.of(tok_lib.init_params(tcfg, jax.random.key(0)), tcfg)
    sat, mp, coords = _pairs(4)
    batch = {"sat_tokens": sat, "map_tokens": mp, "coords": coords}
    m = jax.jit(lambda p: emt.eval_fn(p, batch, jax.random.key(0), config, frozen))(
        em.init_params(mc, jax.random.key(1)))
    for d in C.DIRECTIONS:
        assert np.isfinite(float(m[f"cond_gain_{d}"])) and np.isfinite(float(m[f"cond_gain_none_{d}"]))


def test_evaluate_translation_gives_every_figure_for_a_loaded_model():
    from earthmapper_jax.models.loading import Model
    tcfg = dict(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, using_sa=False, using_mid_sa=False,
                vocab_size=V, z_channels=4, image_size=16, patch_nums=PNS)
    tok = tok_lib.Tokenizer(tok_lib.init_params(tcfg, jax.random.key(0)), tcfg)
    mc = em.model_config("tiny", patch_nums=PNS, vocab_size=V, cvae=4, depth=1, embed_dim=32,
                         num_heads=1, si_layer=0, si_weight=0.0, directed_rate=0.5,
                         coloc_cond=True)
    model = Model(mc, em.init_params(mc, jax.random.key(1)), tok)
    sat, mp = _city(8, size=32)
    sat, mp = sat[:, ::2, ::2], mp[:, ::2, ::2]  # 16 px tiles for the 16 px tokenizer
    res = C.evaluate_translation(model, sat, mp, np.zeros((8, 2), np.float32), batch_size=4,
                                 guidance=(0.0, 0.0, 0.0), top_k=1)
    assert set(res["teacher_forced"]) == set(C.DIRECTIONS) and len(res["target"]) == 2
    for d in C.DIRECTIONS:
        assert set(res[d]["layout_gap"]) == set(C.SIMILARITIES)
        assert 0.0 <= res[d]["right_modality"] <= 1.0
    assert 0.0 <= res["classifier_accuracy"] <= 1.0
