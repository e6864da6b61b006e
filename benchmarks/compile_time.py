"""What a notebook or CLI user waits for first: the translate sampler's first call (compile +
run) and second call, in a fresh process with an empty persistent compilation cache (cold) and
in a second fresh process with the cache the first one filled (warm).

    .venv/bin/python benchmarks/compile_time.py --model tiny
    .venv/bin/python benchmarks/compile_time.py --model d16 --batch 1

tiny: configs/tokenizer_var.py:tiny (64 px, scales 1..8, V 512) with the tiny EarthMapper;
d16: VAR's 256 px VQ-VAE (scales 1..16, V 4096) with EarthMapper d16. Random weights (compile
time does not depend on them); sat->map with the default options (the paper's (2, 2, 2) triple,
Complexity Guidance, coordinates given: three CFG branches). The cache is the one the CLI and the
notebook use (earthmapper_jax/compile_cache.py), here in a temporary folder. One JSON line per
process: {"model", "cache", "first_call_s", "second_call_s", "first_call_cpu_s",
"second_call_cpu_s", "setup_s"} (wall and process CPU seconds: on a shared machine the CPU
seconds are the steadier measure).

    .venv/bin/python benchmarks/compile_time.py --notebook demo_out [--figure docs/img/demo_translate.png]

runs notebooks/sampling.ipynb twice on `make demo`'s outputs (DIR/earthmapper_run/model,
DIR/data split val), each time in a fresh kernel (nbclient, ipykernel: the test extra), with one
new cache folder: the translate cell's timings, cold then warm. --figure saves the translate
cell's figure of the first run (the README's picture).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER = {"tiny": "tiny", "d16": "256"}


def child(model_name: str, batch: int, label: str) -> dict:
    import jax
    import numpy as np

    from configs import tokenizer_var
    from earthmapper_jax import tokenizer as tokenizer_lib
    from earthmapper_jax.compile_cache import enable_compilation_cache
    from earthmapper_jax.models import earthmapper as em
    from earthmapper_jax.models.loading import Model
    from earthmapper_jax.sampling import translate

    t0 = time.perf_counter()
    enable_compilation_cache()
    tok_cfg = dict(tokenizer_var.get_config(TOKENIZER[model_name]).model)
    tok = tokenizer_lib.Tokenizer.init(tok_cfg, jax.random.key(0))
    mc = em.model_config(model_name, patch_nums=tuple(tok_cfg["patch_nums"]))
    model = Model(mc, em.init_params(mc, jax.random.key(1)), tok)
    size = tok.image_size
    images = np.zeros((batch, size, size, 3), np.float32)
    coords = np.tile(np.asarray([[40.7, -74.0]], np.float32), (batch, 1))
    setup = time.perf_counter() - t0
    times, cpu = [], []
    for i in range(2):
        t, c = time.perf_counter(), time.process_time()
        _, out = translate(model, images, "sat2map", jax.random.key(i), coords=coords)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"model": model_name, "batch": batch, "cache": label, "first_call_s": round(times[0], 2),
            "second_call_s": round(times[1], 3), "first_call_cpu_s": round(cpu[0], 2),
            "second_call_cpu_s": round(cpu[1], 3), "setup_s": round(setup, 1)}


def notebook(demo_dir: pathlib.Path, env: dict, figure: str | None) -> int:
    import base64

    import nbformat
    from nbclient import NotebookClient

    from earthmapper_jax.io import files

    path = ROOT / "notebooks" / "sampling.ipynb"
    os.environ.update(env)
    for label in ("cold", "warm"):
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        first.source = first.source.replace("../demo_out", str(demo_dir.absolute()))
        t = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        cell = next(c for c in nb.cells if c.cell_type == "code" and "translate(model, source" in c.source)
        text = "".join(o.get("text", "") for o in cell.outputs)
        times = {line.split(":")[0].replace("translate ", ""): float(line.split(":")[1].split()[0])
                 for line in text.splitlines() if line.startswith("translate ")}
        print(json.dumps({"notebook": label, "translate_cell_s": times,
                          "whole_notebook_s": round(time.perf_counter() - t, 1)}), flush=True)
        png = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        if figure and label == "cold" and png:
            files.write_bytes(figure, base64.b64decode(png[0]))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=sorted(TOKENIZER))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cache", default=None, help="cache folder (default: a new temporary one)")
    p.add_argument("--notebook", default=None, metavar="DEMO_DIR",
                   help="time the notebook's translate cell on make demo's outputs instead")
    p.add_argument("--figure", default=None, help="with --notebook: save the translate figure here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.batch, args.child)), flush=True)
        return 0
    cache = args.cache or tempfile.mkdtemp(prefix="earthmapper_jax_cache_")
    env = dict(os.environ, EARTHMAPPER_CACHE=cache, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    if args.notebook:
        return notebook(pathlib.Path(args.notebook), env, args.figure)
    for label in ("cold", "warm"):
        res = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch", str(args.batch),
                              "--child", label], env=env, capture_output=True, text=True)
        if res.returncode:
            sys.stderr.write(res.stderr[-3000:])
            return res.returncode
        print(res.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
