"""`make demo`: the whole pipeline on the procedural synthetic city, on a laptop CPU, in minutes.

    python -m earthmapper_jax.demo --out demo_out [--tokenizer-seconds S] [--earthmapper-seconds S]

1. synthetic tiles through the real path: `earthmapper prepare synthetic` -> TFRecord -> Grain;
2. the tiny tokenizer trained by the generic trainer (configs/tokenizer_var.py:tiny), then a
   reconstruction grid of validation tiles with its PSNR;
3. the tiles pre-tokenised once (`earthmapper prepare tokens`, identity + horizontal flip);
4. the tiny EarthMapper (configs/earthmapper_train.py:tiny) trained on the tokens, with sample
   grids [satellite | generated map | real map | map | generated satellite | real satellite].
Everything lands under --out; the last lines printed say where. Both trainings run for a
wall-clock budget (config.max_train_seconds), so the demo takes about the same time on any
machine (about 6 minutes on 2 CPU cores); the step counts cap them on fast machines.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time


def _say(msg):
    print(f"[demo] {msg}", flush=True)


def _config(file, arg, **fields):
    """A configs/ file's config with dotted overrides (a__b=v sets a.b)."""
    from earthmapper_jax.cli.train import load_config

    root = pathlib.Path(__file__).resolve().parents[1]
    overrides = [f"--config.{k.replace('__', '.')}={v}" for k, v in fields.items()]
    return load_config(f"{root / 'configs' / file}:{arg}", overrides)


def _sample_metrics(workdir):
    from earthmapper_jax.train.metrics import read_jsonl

    out = {}
    for rec in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl"):
        out.update({k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("sample/")})
    return out


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
    args = p.parse_args(argv)

    from data_prep import synthetic as syn_prep
    from earthmapper_jax.data.tokens import prepare_tokens
    from earthmapper_jax.train.trainer import train_and_evaluate

    t_all = time.time()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    summary = {}

    ##### 1. Synthetic city -> TFRecord #####
    t = time.time()
    syn_prep.prepare(data, args.pairs, size=args.size, seed=0, val_fraction=0.125, workers=2,
                     overwrite=True, progress=False)
    _say(f"1/4 synthetic city: {args.pairs} pairs ({args.size} px) as TFRecords in {data} "
         f"({time.time() - t:.0f} s)")

    ##### 2. Tiny tokenizer #####
    t = time.time()
    tok_run = out / "tokenizer_run"
    shutil.rmtree(tok_run, ignore_errors=True)  # the demo always trains from scratch
    # The tiny tokenizer (64 px, 8x downsampling, scales 1..8); at 32 px one level fewer (4x),
    # so the token grid (and the tiny EarthMapper's scales) stay the same.
    scales = {} if args.size == 64 else {"model__image_size": 32, "model__ch_mult": "(1,1,2)"}
    cfg = _config("tokenizer_var.py", "tiny", data__dir=data, data__image_size=args.size,
                  total_steps=args.tokenizer_steps, max_train_seconds=args.tokenizer_seconds,
                  eval_every_steps=-1, sample_batch_size=6, checkpoint__every_steps=10**6,
                  log_every_steps=10, data__examples_per_epoch=args.pairs * 7 // 8, **scales)
    res = train_and_evaluate(cfg, tok_run)
    tok_dir = tok_run / "tokenizer"
    # The run's last sample grid: validation tiles | reconstructions, with their PSNR.
    shutil.copy(sorted((tok_run / "samples").glob("*.png"))[-1], out / "reconstructions.png")
    m = _sample_metrics(tok_run)
    psnr = {"satellite": m["psnr_satellite"], "map": m["psnr_map"]}
    summary["tokenizer"] = {"dir": str(tok_dir), "psnr_db": psnr, "seconds": time.time() - t}
    _say(f"2/4 tokenizer: {res['step']} steps in {time.time() - t:.0f} s; "
         f"validation PSNR satellite {psnr['satellite']:.2f} dB, map {psnr['map']:.2f} dB "
         f"-> {out / 'reconstructions.png'}")

    if not args.skip_earthmapper:
        ##### 3. Pre-tokenise #####
        t = time.time()
        tokens = out / "tokens"
        prepare_tokens(tok_dir, data, tokens, variants="hflip", overwrite=True, progress=False)
        _say(f"3/4 pre-tokenised both modalities (identity + flipped variant) in {tokens} "
             f"({time.time() - t:.0f} s)")

        ##### 4. Tiny EarthMapper on the tokens #####
        t = time.time()
        em_run = out / "earthmapper_run"
        shutil.rmtree(em_run, ignore_errors=True)
        cfg = _config("earthmapper_train.py", "tiny", data__tokens_dir=tokens,
                      data__image_size=args.size, model__tokenizer_dir=tok_dir,
                      total_steps=args.earthmapper_steps, sample_batch_size=6,
                      max_train_seconds=args.earthmapper_seconds, eval_every_steps=0,
                      checkpoint__every_steps=10**6, sample_every_steps=0, log_every_steps=10)
        res = train_and_evaluate(cfg, em_run)
        n = res["step"]
        samples = sorted((em_run / "samples").glob("*.png"))
        summary["earthmapper"] = {"dir": str(em_run / "model"), "samples": [str(s) for s in samples],
                                  "final": res["metrics"], "seconds": time.time() - t}
        _say(f"4/4 EarthMapper: {n} steps in {time.time() - t:.0f} s; sample grids "
             f"[satellite | generated map | real map | map | generated satellite | real "
             f"satellite]: {', '.join(str(s) for s in samples)}")

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _say(f"done in {time.time() - t_all:.0f} s. Everything is in {out}:")
    _say(f"  reconstructions  {out / 'reconstructions.png'}")
    _say(f"  tokenizer        {tok_dir}  (earthmapper_jax.tokenizer.load)")
    if "earthmapper" in summary:
        _say(f"  EarthMapper      {em_run / 'model'}  (earthmapper_jax.load)")
        _say(f"  samples          {em_run / 'samples'}")
    _say(f"  curves           earthmapper plot {tok_run}   /   earthmapper plot "
         f"{out / 'earthmapper_run'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
