"""The tiny trained EarthMapper of the `tiny_em_model` fixture (tests/conftest.py), built in its
own process: one CPU device (the test process simulates 8, and an 8-way SPMD train step compiles
several times slower) and XLA's unoptimised CPU compile, as the demo's --smoke.

    python tests/tiny_em_model.py ROOT      # writes ROOT/data, ROOT/tokenizer, ROOT/run/model

A micro tokenizer (16 px, scales 1,2,4,8, 64 codes; random weights) and the tiny EarthMapper
(depth 2, width 64) trained 3 steps on it by the real trainer, exported as `earthmapper train`
exports it, beside a prepared synthetic dataset (16 train / 8 val pairs). Nothing is learnt;
every path a user takes (prepare -> train -> export -> load -> sample) is the real one.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MICRO_TOKENIZER = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
                       image_size=16, patch_nums=(1, 2, 4, 8), using_sa=False, using_mid_sa=False)
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def env() -> dict:
    out = dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS="cpu")
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p])
    return out


def build(root) -> dict:
    import jax

    from configs import earthmapper_tiny
    from earthmapper_jax import tokenizer as tokenizer_lib
    from earthmapper_jax.data_prep import synthetic as syn_prep
    from earthmapper_jax.train.trainer import train_and_evaluate

    root = pathlib.Path(root)
    size = MICRO_TOKENIZER["image_size"]
    data, tok_dir, run = root / "data", root / "tokenizer", root / "run"
    syn_prep.prepare(data, 24, size=size, seed=0, val_fraction=1 / 3, workers=1, progress=False)
    tokenizer_lib.Tokenizer.init(MICRO_TOKENIZER, jax.random.key(0)).save(tok_dir)
    config = earthmapper_tiny.get_config("paper_tiny")
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


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    build(sys.argv[1])
