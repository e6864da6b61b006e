"""`make demo`: the whole pipeline on the procedural synthetic city, on a laptop CPU, in minutes.

    python examples/demo.py --out demo_out [--tokenizer-seconds S] [--earthmapper-seconds S]
    python examples/demo.py --out /tmp/demo --smoke      # a few steps each: checks the pipeline

1. synthetic tiles through the real path: `earthmapper prepare synthetic` -> TFRecord -> Grain;
2. the tiny tokenizer trained by the generic trainer (configs/tokenizer_var.py:tiny), then a
   reconstruction grid of validation tiles with its PSNR;
3. the tiles pre-tokenised once (`earthmapper prepare tokens`, identity + horizontal flip);
4. the tiny EarthMapper (configs/earthmapper_tiny.py:tiny, the small-budget recipe that makes it
   follow its source) trained on the tokens, with sample grids [satellite | generated map |
   real map | map | generated satellite | real satellite];
5. does a translation follow its source? The condition-use instrument on the held-out tiles
   (evaluation/condition.py): conditioning gain (teacher-forced CE with a shuffled source minus
   with the real one, per direction and scale, 95 % CI), layout gap (SSIM / 8×8 block
   correlation to the own ground truth minus to another tile's) and the share of outputs of
   the right modality (a colour/texture classifier calibrated on real tiles), in
   OUT/condition.json;
then the loss curves of both runs (`earthmapper plot`, WORKDIR/plots/curves.png).
Everything lands under --out; the last lines printed say where. Both trainings run for a
wall-clock budget (config.max_train_seconds), so the demo takes about the same time on any
machine (about 6 minutes on 2 CPU cores); the step counts cap them on fast machines.

A script of the repository, not of the package: it reads configs/ beside it and imports the
checkout's packages (the repository root goes first on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from earthmapper_jax.data_prep import synthetic as syn_prep  # noqa: E402
from earthmapper_jax import cli  # noqa: E402
from earthmapper_jax.cli.train import load_config  # noqa: E402
from earthmapper_jax.pretokenize import prepare_tokens  # noqa: E402
from earthmapper_jax.data.pipeline import pipeline  # noqa: E402
from earthmapper_jax.evaluation import condition  # noqa: E402
from earthmapper_jax.io import files  # noqa: E402
from earthmapper_jax.models.loading import load  # noqa: E402
from earthmapper_jax.train.metrics import read_jsonl  # noqa: E402
from earthmapper_jax.train.trainer import train_and_evaluate  # noqa: E402

# --smoke: enough data for one validation batch, a few steps per training, 4 scales instead of
# 6, a tokenizer without attention and with one residual block per level, no final evaluation:
# the same pipeline and every output of a full run in a fraction of the compile time. Nothing
# is learnt.
SMOKE = dict(pairs=64, tokenizer_steps=3, earthmapper_steps=3)
SMOKE_SCALES = "(1,2,4,8)"
SMOKE_TOKENIZER = dict(model__num_res_blocks=1, model__using_sa=False, model__using_mid_sa=False,
                       model__patch_nums=SMOKE_SCALES)
SMOKE_EARTHMAPPER = dict(eval_every_steps=-1, model__patch_nums=SMOKE_SCALES)
# Compiling dominates a smoke run; XLA's CPU backend compiles about 2x faster unoptimised. XLA
# reads these flags when JAX starts its backend (the first array), not when jax is imported.
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _say(msg):
    print(f"[demo] {msg}", flush=True)


def _config(file, arg, **fields):
    """A configs/ file's config with dotted overrides (a__b=v sets a.b)."""
    overrides = [f"--config.{k.replace('__', '.')}={v}" for k, v in fields.items()]
    return load_config(f"{ROOT / 'configs' / file}:{arg}", overrides)


def _sample_metrics(workdir):
    out = {}
    for rec in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl"):
        out.update({k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("sample/")})
    return out


def _condition_figures(model_dir, data, out) -> dict:
    """The instrument on the validation tiles; prints its figures, writes out/condition.json."""
    batches = list(pipeline(data, "val", 64, num_epochs=1, shuffle=False))
    cat = lambda k: np.concatenate([b[k] for b in batches])  # noqa: E731
    res = condition.evaluate_translation(load(model_dir), cat("sat_image"), cat("map_image"),
                                         cat("coords"), rng=jax.random.key(0))
    files.write_text(out / "condition.json", json.dumps(res, indent=1))
    for d in ("sat2map", "map2sat"):
        tf, lg = res["teacher_forced"][d], res[d]["layout_gap"]
        lo, hi = tf["gain_all_ci"]
        scales = ", ".join(f"{g:+.3f} [{a:+.3f}, {b:+.3f}]"
                           for g, (a, b) in zip(tf["gain"][1:], tf["gain_ci"][1:]))
        _say(f"  {d}: conditioning gain {tf['gain_all']:+.4f} nats/token [{lo:+.4f}, {hi:+.4f}]; "
             f"by scale 1..{len(tf['gain']) - 1}: {scales}")
        s, b = lg["ssim"], lg["block_corr"]
        _say(f"  {d}: layout gap SSIM {s['gap']:+.4f} [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}], "
             f"block correlation {b['gap']:+.3f} [{b['ci'][0]:+.3f}, {b['ci'][1]:+.3f}]; "
             f"right modality {100 * res[d]['right_modality']:.0f} %")
    ok, fails = res["target"]
    _say(f"  teacher-forced target (gain CI > 0 at every scale >= 1, both ways): "
         f"{'met' if ok else 'NOT met at ' + str(fails)}; modality classifier held-out accuracy "
         f"{100 * res['classifier_accuracy']:.0f} %")
    # The pix2pix baseline's figures on the same kind of tiles: benchmarks/pix2pix_reference.py
    # (benchmarks/RESULTS.md); the demo does not train it, to stay within its time budget.
    _say("  baseline: pix2pix's layout gap on these tiles is benchmarks/pix2pix_reference.py's "
         "(benchmarks/RESULTS.md)")
    return res


def _plot(workdir) -> pathlib.Path:
    """`earthmapper plot WORKDIR`: the loss curves of a run, as a user draws them."""
    with contextlib.redirect_stdout(io.StringIO()):  # its "wrote ..." line: the demo says it
        rc = cli.main(["plot", str(workdir)])
    if rc:
        raise SystemExit(f"[demo] earthmapper plot {workdir} failed (its error is above)")
    return pathlib.Path(workdir) / "plots" / "curves.png"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--pairs", type=int, default=320, help="synthetic pairs (1/8 for validation)")
    p.add_argument("--size", type=int, default=32, choices=(32, 64),
                   help="tile size: 32 px trains ~3x more steps per second than 64 on a CPU")
    p.add_argument("--tokenizer-seconds", type=float, default=100)
    p.add_argument("--tokenizer-steps", type=int, default=400)
    p.add_argument("--earthmapper-seconds", type=float, default=120)
    p.add_argument("--earthmapper-steps", type=int, default=2000)
    p.add_argument("--skip-earthmapper", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help=f"pipeline check: {SMOKE['pairs']} pairs, {SMOKE['tokenizer_steps']} "
                        "steps per training (about 1-2 minutes on 2 CPU cores)")
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SMOKE_XLA_FLAGS}".strip()

    t_all = time.time()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    summary = {}

    ##### 1. Synthetic city -> TFRecord #####
    t = time.time()
    syn_prep.prepare(data, args.pairs, size=args.size, seed=0, val_fraction=0.125, workers=2,
                     overwrite=True, progress=False)
    _say(f"1/5 synthetic city: {args.pairs} pairs ({args.size} px) as TFRecords in {data} "
         f"({time.time() - t:.0f} s)")

    ##### 2. Tiny tokenizer #####
    t = time.time()
    tok_run = out / "tokenizer_run"
    shutil.rmtree(tok_run, ignore_errors=True)  # the demo always trains from scratch
    # The tiny tokenizer (64 px, 8x downsampling, scales 1..8); at 32 px one level fewer (4x),
    # so the token grid (and the tiny EarthMapper's scales) stay the same.
    scales = {} if args.size == 64 else {"model__image_size": 32, "model__ch_mult": "(1,1,2)"}
    smoke = SMOKE_TOKENIZER if args.smoke else {}
    cfg = _config("tokenizer_var.py", "tiny", data__dir=data, data__image_size=args.size,
                  total_steps=args.tokenizer_steps, max_train_seconds=args.tokenizer_seconds,
                  eval_every_steps=-1, sample_batch_size=6, checkpoint__every_steps=10**6,
                  log_every_steps=10, data__examples_per_epoch=args.pairs * 7 // 8,
                  **scales, **smoke)
    res = train_and_evaluate(cfg, tok_run)
    tok_dir = tok_run / "tokenizer"
    # The run's last sample grid: validation tiles | reconstructions, with their PSNR.
    last_grid = sorted((tok_run / "samples").glob("*.png"))[-1]
    files.write_bytes(out / "reconstructions.png", last_grid.read_bytes())
    m = _sample_metrics(tok_run)
    psnr = {"satellite": m["psnr_satellite"], "map": m["psnr_map"]}
    curves = [_plot(tok_run)]
    summary["tokenizer"] = {"dir": str(tok_dir), "psnr_db": psnr, "curves": str(curves[0]),
                            "seconds": time.time() - t}
    _say(f"2/5 tokenizer: {res['step']} steps in {time.time() - t:.0f} s; "
         f"validation PSNR satellite {psnr['satellite']:.2f} dB, map {psnr['map']:.2f} dB "
         f"-> {out / 'reconstructions.png'}")

    if not args.skip_earthmapper:
        ##### 3. Pre-tokenise #####
        t = time.time()
        tokens = out / "tokens"
        prepare_tokens(tok_dir, data, tokens, variants="hflip", overwrite=True, progress=False)
        _say(f"3/5 pre-tokenised both modalities (identity + flipped variant) in {tokens} "
             f"({time.time() - t:.0f} s)")

        ##### 4. Tiny EarthMapper on the tokens #####
        t = time.time()
        em_run = out / "earthmapper_run"
        shutil.rmtree(em_run, ignore_errors=True)
        em_fields = {"eval_every_steps": 0, **(SMOKE_EARTHMAPPER if args.smoke else {})}
        cfg = _config("earthmapper_tiny.py", "tiny", data__tokens_dir=tokens,
                      data__image_size=args.size, model__tokenizer_dir=tok_dir,
                      total_steps=args.earthmapper_steps, sample_batch_size=6,
                      max_train_seconds=args.earthmapper_seconds,
                      checkpoint__every_steps=10**6, sample_every_steps=0, log_every_steps=10,
                      **em_fields)
        res = train_and_evaluate(cfg, em_run)
        n = res["step"]
        samples = sorted((em_run / "samples").glob("*.png"))
        curves.append(_plot(em_run))
        summary["earthmapper"] = {"dir": str(em_run / "model"), "samples": [str(s) for s in samples],
                                  "curves": str(curves[-1]), "final": res["metrics"],
                                  "seconds": time.time() - t}
        _say(f"4/5 EarthMapper: {n} steps in {time.time() - t:.0f} s; sample grids "
             f"[satellite | generated map | real map | map | generated satellite | real "
             f"satellite]: {', '.join(str(s) for s in samples)}")

        ##### 5. Condition use on the held-out tiles #####
        t = time.time()
        _say("5/5 does each translation follow its source? (held-out tiles)")
        summary["condition"] = _condition_figures(em_run / "model", data, out)
        summary["condition"]["seconds"] = time.time() - t
        _say(f"  ({time.time() - t:.0f} s) -> {out / 'condition.json'}")

    files.write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    _say(f"done in {time.time() - t_all:.0f} s. Everything is in {out}:")
    _say(f"  reconstructions  {out / 'reconstructions.png'}")
    _say(f"  tokenizer        {tok_dir}  (earthmapper_jax.tokenizer.load)")
    if "earthmapper" in summary:
        _say(f"  EarthMapper      {em_run / 'model'}  (earthmapper_jax.load)")
        _say(f"  samples          {em_run / 'samples'}")
        _say(f"  condition use    {out / 'condition.json'}")
    _say(f"  metrics          {'   '.join(str(c.parents[1] / 'metrics.jsonl') for c in curves)}")
    _say(f"  loss curves      {'   '.join(str(c) for c in curves)}  (earthmapper plot WORKDIR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
