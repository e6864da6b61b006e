"""Mutation score of the suite over the modules whose mistakes are silent (`make mutation`).

mutmut (the `mutation` extra, configured in setup.cfg [mutmut]) mutates every function
listed in SCOPE below, one mutant at a time, and runs against each the tests of the setup.cfg
selection that execute the mutated function; a mutant is killed when one of them fails.
This script runs it from scratch, reports progress, and prints per module: mutants, killed,
survived, equivalent (survivors explained in tests/mutation_equivalent.txt), no test reached
it, and the score = killed / (mutants - equivalent). docs/testing.md records a run.

    python tests/mutation_score.py [--workers 2] [--only MODULE ...] [--resume]
                                   [--survivors FILE] [--goal 0.9]

--survivors FILE writes the diff of every unexplained survivor (what a new test must catch).
Exit status 1 when the overall score is below --goal or an entry of the equivalent list no
longer survives (stale: remove it), 2 when mutmut itself fails.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MUTANTS_DIR = ROOT / "mutants"
EQUIVALENT = pathlib.Path(__file__).resolve().parent / "mutation_equivalent.txt"

# module -> the mutmut name patterns scored there (whole modules where the whole module is the
# mechanism; else the functions that hold it: the losses, not config plumbing or hooks)
SCOPE = {
    "models/masks.py": ["earthmapper_jax.models.masks.*"],
    "models/layout.py": ["earthmapper_jax.models.layout.*"],
    "sampling/guidance.py": ["earthmapper_jax.sampling.guidance.*"],
    "sampling/filtering.py": ["earthmapper_jax.sampling.filtering.*"],
    "tokenizer/quantizer.py": ["earthmapper_jax.tokenizer.quantizer.*"],
    "tokenizer/losses.py": [
        "earthmapper_jax.tokenizer.losses.x_tokenizer_loss__*",
        "earthmapper_jax.tokenizer.losses.x_loss_config__*",
        "earthmapper_jax.tokenizer.losses.x_update_code_age__*",
        "earthmapper_jax.tokenizer.losses.x_restart_dead_codes__*",
    ],
    "tokenizer/discriminator.py": [
        "earthmapper_jax.tokenizer.discriminator.x_hinge_d_loss__*",
        "earthmapper_jax.tokenizer.discriminator.x_hinge_g_loss__*",
    ],
    "models/semantic.py": [
        "earthmapper_jax.models.semantic.x_targets_from_grid__*",
        "earthmapper_jax.models.semantic.x_reconstruction_targets__*",
        "earthmapper_jax.models.semantic.x_as_targets__*",
        "earthmapper_jax.models.semantic.x_per_token_loss__*",
        "earthmapper_jax.models.semantic.x_scale_mean__*",
    ],
    "train/earthmapper_task.py": [
        "earthmapper_jax.train.earthmapper_task.x_loss_fn__*",
        "earthmapper_jax.train.earthmapper_task.x__si_targets__*",
        "earthmapper_jax.train.earthmapper_task.x__tokens_and_inputs__*",
    ],
    "data/tfrecord.py": ["earthmapper_jax.data.tfrecord.*"],
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _mutmut() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        sys.exit("error: mutmut is not installed in this Python; run 'make mutation' (it installs it) "
                 "or 'pip install -e .[test,mutation]'")
    return [str(exe)]


def load_equivalent() -> dict[str, str]:
    """name -> reason, from tests/mutation_equivalent.txt ('name: reason' lines, # comments)."""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(":")
                out[name.strip()] = reason.strip()
    return out


def read_results() -> dict[str, str]:
    """mutant name -> status, from mutmut's .meta files."""
    from mutmut.stats import status_by_exit_code  # the test extras install mutmut

    out = {}
    for meta in MUTANTS_DIR.rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = status_by_exit_code[code]
    return out


def in_scope(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _progress(proc, patterns, started):
    last = 0.0
    while proc.poll() is None:
        time.sleep(5)
        if time.time() - last < 30:
            continue
        last = time.time()
        res = {n: s for n, s in read_results().items() if in_scope(n, patterns)} if MUTANTS_DIR.exists() else {}
        done = sum(s != "not checked" for s in res.values())
        killed = sum(s in KILLED for s in res.values())
        print(f"mutation: {done}/{len(res) or '?'} mutants checked, {killed} killed, "
              f"{(time.time() - started) / 60:.1f} min", flush=True)


def table(results: dict[str, str], equivalent: dict[str, str], modules) -> tuple[str, float, list]:
    rows = []
    tot = collections.Counter()
    for module in modules:
        st = collections.Counter()
        for name, status in results.items():
            if not in_scope(name, SCOPE[module]):
                continue
            st["mutants"] += 1
            if status in KILLED:
                st["killed"] += 1
            elif name in equivalent:
                st["equivalent"] += 1
            elif status == "no tests":
                st["no test"] += 1
            elif status == "not checked":  # an interrupted run (--resume continues it)
                st["not checked"] += 1
            else:
                st["survived"] += 1
        tot.update(st)
        rows.append((module, st))
    rows.append(("all", tot))
    lines = ["| module | mutants | killed | survived | equivalent | no test | not checked | score |",
             "|---|---|---|---|---|---|---|---|"]
    for module, st in rows:
        denom = st["mutants"] - st["equivalent"]
        score = st["killed"] / denom if denom else 1.0
        lines.append(f"| {module} | {st['mutants']} | {st['killed']} | {st['survived']} | "
                     f"{st['equivalent']} | {st['no test']} | {st['not checked']} | {100 * score:.1f} % |")
    denom = tot["mutants"] - tot["equivalent"]
    stale = [n for n in equivalent if n in results and results[n] in KILLED]
    return "\n".join(lines), (tot["killed"] / denom if denom else 1.0), stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="mutants checked in parallel")
    ap.add_argument("--only", nargs="+", choices=sorted(SCOPE), help="score these modules only")
    ap.add_argument("--resume", action="store_true",
                    help="keep mutants/ from an earlier run (only unchecked mutants run)")
    ap.add_argument("--survivors", type=pathlib.Path, help="write the unexplained survivors' diffs here")
    ap.add_argument("--goal", type=float, default=0.9, help="minimum overall score (exit 1 below)")
    ap.add_argument("--log", type=pathlib.Path, default=ROOT / "mutants.log", help="mutmut's own output")
    args = ap.parse_args(argv)
    modules = args.only or list(SCOPE)
    patterns = [p for m in modules for p in SCOPE[m]]
    mutmut = _mutmut()

    if not args.resume and MUTANTS_DIR.exists():
        shutil.rmtree(MUTANTS_DIR)
    started = time.time()
    print(f"mutation: mutmut over {len(modules)} modules, {args.workers} workers; its output goes to "
          f"{args.log}", flush=True)
    with open(args.log, "w") as log:
        proc = subprocess.Popen(mutmut + ["run", "--max-children", str(args.workers)] + patterns,
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _progress(proc, patterns, started)
        except KeyboardInterrupt:
            proc.terminate()
            raise
    if proc.returncode != 0:
        print(f"error: mutmut run exited with {proc.returncode}; see {args.log}", file=sys.stderr)
        return 2
    minutes = (time.time() - started) / 60

    results = {n: s for n, s in read_results().items() if in_scope(n, patterns)}
    equivalent = load_equivalent()
    text, score, stale = table(results, equivalent, modules)
    print(text)
    print(f"\nmutation: score {100 * score:.1f} % in {minutes:.1f} min "
          f"(python tests/mutation_score.py --workers {args.workers})")
    survivors = sorted(n for n, s in results.items() if s not in KILLED and n not in equivalent)
    if args.survivors:
        with open(args.survivors, "w") as f:
            for name in survivors:
                diff = subprocess.run(mutmut + ["show", name], cwd=ROOT, capture_output=True, text=True)
                f.write(f"# {name}: {results[name]}\n{diff.stdout}\n")
        print(f"mutation: {len(survivors)} unexplained survivors written to {args.survivors}")
    for name in stale:
        print(f"mutation: {name} is listed as equivalent but was killed: remove it from {EQUIVALENT.name}")
    return 0 if score >= args.goal and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
