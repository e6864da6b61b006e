"""Pre-tokenised training data: variants, the reader, equality with on-the-fly tokenising, and
the layering (pre-tokenising lives above data/, which imports neither tokenizer nor models)."""

import json
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tokenizer_lib
from earthmapper_jax.data import pipeline
from earthmapper_jax.data import token_records as tokens
from earthmapper_jax.data_prep import synthetic as syn_prep
from earthmapper_jax.pretokenize import prepare_tokens
from earthmapper_jax.scales import flatten_tokens

MICRO = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
             image_size=16, patch_nums=(1, 2, 4, 8))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    data, tok_dir, out = root / "data", root / "tokenizer", root / "tokens"
    syn_prep.prepare(data, 12, size=16, seed=0, val_fraction=0.25, workers=1, progress=False)
    tokenizer_lib.Tokenizer.init(MICRO, jax.random.key(0)).save(tok_dir)
    manifests = prepare_tokens(tok_dir, data, out, variants="auto", batch_size=4, progress=False)
    return data, tok_dir, out, manifests


def _val_images(data, n=3):
    return next(pipeline(data, "val", n, image_size=16, augment=False, shuffle=False,
                         num_epochs=1))


def test_variants_are_stored_because_tokens_do_not_commute(prepared):
    data, tok_dir, out, manifests = prepared
    m = manifests["val"]
    assert m["num_records"] == 3 and json.loads((out / "val.tokens.json").read_text()) == m
    # Random weights: flipping tokens != tokenising the flipped image, so "auto" stores all 8.
    assert max(v["agreement"] for v in m["commutation"].values()) < 0.9
    assert len(m["variants"]) == 8 and not m["derive_variants"]
    tok = tokenizer_lib.load(tok_dir)
    batch = _val_images(data)
    stored = np.load(out / "val.sat_tokens.npy")
    assert stored.shape == (8, 3, 1 + 4 + 16 + 64) and stored.dtype == np.uint16
    for v in (0, 5):
        h, k = m["variants"][v]
        want = flatten_tokens(tok.encode(tokens.transform(batch["sat_image"], h, k)))
        np.testing.assert_array_equal(stored[v], want)
    np.testing.assert_array_equal(np.load(out / "val.tile_ids.npy"), batch["tile_id"])
    with pytest.raises(Exception, match="exists"):
        prepare_tokens(tok_dir, data, out, splits=["val"], progress=False)


def test_reader_draws_stored_variants_deterministically_and_resumes(prepared):
    _, _, out, _ = prepared
    stored = np.load(out / "train.map_tokens.npy")
    ids = list(np.load(out / "train.tile_ids.npy"))

    def batches(it, n):
        return [next(it) for _ in range(n)]

    a = batches(tokens.token_pipeline(out, "train", 3, seed=1, augment=True), 4)
    b = batches(tokens.token_pipeline(out, "train", 3, seed=1, augment=True), 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["map_tokens"], y["map_tokens"])
    used = set()
    for batch in a:
        assert batch["sat_tokens"].dtype == np.int32 and batch["sat_tokens"].shape == (3, 85)
        for row, tid in zip(batch["map_tokens"], batch["tile_id"]):
            matches = [v for v in range(8) if (stored[v, ids.index(tid)] == row).all()]
            assert matches
            used.update(matches)
    assert len(used) > 1  # augmentation really varies the variant
    plain = next(tokens.token_pipeline(out, "train", 3, augment=False, shuffle=False))
    np.testing.assert_array_equal(plain["map_tokens"], stored[0, :3])
    # Grain iterator state: a resumed reader continues with the same batches.
    it = tokens.token_pipeline(out, "train", 3, seed=1, augment=True)
    batches(it, 2)
    state = it.get_state()
    it2 = tokens.token_pipeline(out, "train", 3, seed=1, augment=True)
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["map_tokens"], a[2]["map_tokens"])


def test_pretokenised_loss_equals_tokenising_on_the_fly(prepared):
    from earthmapper_jax.models import earthmapper as em
    from earthmapper_jax.train import earthmapper_task as emt

    data, tok_dir, out, _ = prepared
    config = ml_collections.ConfigDict()
    config.model = em.model_config("tiny", patch_nums=MICRO["patch_nums"],
                                   vocab_size=MICRO["vocab_size"], cvae=MICRO["z_channels"],
                                   si_weight=0.0)
    config.model.tokenizer_dir = str(tok_dir)
    params = em.init_params(config.model, jax.random.key(0))
    frozen = emt.load_frozen(config)
    images = _val_images(data)
    toks = next(tokens.token_pipeline(out, "val", 3, augment=False, shuffle=False))
    rng = jax.random.key(3)
    # The pipelines' keys are the loss's keys; only the host-side tile ids stay behind.
    host_only = lambda b: {k: v for k, v in b.items() if k != "tile_id"}  # noqa: E731
    loss_img, m_img = emt.loss_fn(params, host_only(images), rng, config, frozen)
    loss_tok, m_tok = emt.loss_fn(params, host_only(toks), rng, config, frozen)
    np.testing.assert_allclose(float(loss_tok), float(loss_img), rtol=1e-6)
    np.testing.assert_allclose(float(m_tok["acc_sat"]), float(m_img["acc_sat"]))


def test_derived_variants_move_every_scale_like_the_image():
    # derive_variants (tokens that commute exactly): the reader flips/rotates each scale's map.
    maps = [np.arange(1).reshape(1, 1), np.arange(1, 5).reshape(2, 2), np.arange(5, 14).reshape(3, 3)]
    flat = np.concatenate([m.ravel() for m in maps]).astype(np.uint16)[None]  # one stored variant
    moved = {tuple(np.concatenate([np.rot90(m[:, ::-1] if h else m, k).ravel() for m in maps])): (h, k)
             for h, k in tokens.VARIANT_SETS["dihedral"]}
    choose = tokens.ChooseVariant(True, ((0, 0),), True, (1, 2, 3))
    el = {"sat_tokens": flat, "map_tokens": flat, "coords": np.zeros(2, np.float32), "tile_id": "t"}
    seen = set()
    for seed in range(40):
        out = choose(el, np.random.default_rng(seed))
        assert out["sat_tokens"].dtype == np.int32
        seen.add(moved[tuple(out["sat_tokens"])])
    assert len(seen) > 4


def test_data_layer_imports_neither_tokenizer_nor_models():
    code = ("import sys, earthmapper_jax.data, earthmapper_jax.data.token_records, "
            "earthmapper_jax.data.synthetic_city, earthmapper_jax.data_prep.common; "
            "bad = [m for m in sys.modules if m.startswith(('earthmapper_jax.tokenizer', "
            "'earthmapper_jax.models', 'earthmapper_jax.pretokenize'))]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
