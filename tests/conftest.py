"""Test-wide settings: 8 simulated CPU devices (sharding tests) and deterministic, quiet JAX."""

import os

# Must be set before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The sampling CLI turns on JAX's persistent compilation cache (earthmapper_jax/compile_cache.py);
# tests must not fill ~/.cache: those that test the cache give it a temporary folder.
os.environ.setdefault("EARTHMAPPER_CACHE", "off")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


# ----------------------------------------------------------------------------- a trained model
# A micro tokenizer (16 px, 4 scales, 64 codes; random weights) and the tiny EarthMapper trained
# a few steps on it by the real trainer, exported as `earthmapper train` exports it, beside a
# prepared synthetic split: what the notebook and the sampling CLI tests run against. Nothing is
# learnt; every path a user takes (train -> export -> load -> sample) is the real one.
MICRO_TOKENIZER = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
                       image_size=16, patch_nums=(1, 2, 4, 8), using_sa=False, using_mid_sa=False)


@pytest.fixture(scope="session")
def tiny_em_model(tmp_path_factory):
    """{"model": exported model dir, "tokenizer": tokenizer dir, "data": prepared data dir with
    splits "train" (16 pairs) and "val" (8 pairs), "image_size": 16}."""
    import jax

    from configs import earthmapper_train
    from earthmapper_jax import tokenizer as tokenizer_lib
    from earthmapper_jax.data_prep import synthetic as syn_prep
    from earthmapper_jax.train.trainer import train_and_evaluate

    root = tmp_path_factory.mktemp("tiny_em")
    size = MICRO_TOKENIZER["image_size"]
    data, tok_dir, run = root / "data", root / "tokenizer", root / "run"
    syn_prep.prepare(data, 24, size=size, seed=0, val_fraction=1 / 3, workers=1, progress=False)
    tokenizer_lib.Tokenizer.init(MICRO_TOKENIZER, jax.random.key(0)).save(tok_dir)
    config = earthmapper_train.get_config("tiny")
    config.model.update(depth=2, embed_dim=64, num_heads=2, patch_nums=MICRO_TOKENIZER["patch_nums"],
                        vocab_size=MICRO_TOKENIZER["vocab_size"], tokenizer_dir=str(tok_dir))
    config.data.dir = str(data)
    config.data.image_size = size
    config.data.augment = False
    config.batch_size = 8
    config.total_steps = 3
    config.optim.warmup_steps = 1
    config.eval_every_steps = -1
    config.sample_every_steps = 0
    config.log_every_steps = 1
    config.checkpoint.every_steps = 10**6
    train_and_evaluate(config, run)
    return {"model": run / "model", "tokenizer": tok_dir, "data": data, "image_size": size}
