"""Planted one-line mistakes and the tests that must catch them (`make mutation-planted`, not `make test`).

Each mutant is (name, file, original text, mutated text, pytest selection). The package and the
tests are copied to a temporary directory, one mutant is applied at a time, the selected tests
run there (PYTHONPATH pointing at the copy), and a mutant counts as killed when they fail.
The original text must occur exactly once, so a refactor that moves the line makes this script
stop with a clear message instead of silently testing nothing. docs/testing.md records a run.

    python tests/mutants.py [--only NAME ...] [--timeout SECONDS]
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

MUTANTS = [
    # loss masking and GJSA visibility (tests/test_loss_masking.py)
    ("group_sees_other_half", "earthmapper_jax/models/masks.py",
     "ok = q_group[..., :, None] == k_group[..., None, :]", "ok = q_group[..., :, None] >= k_group[..., None, :]",
     "tests/test_loss_masking.py -k eq10"),
    ("directed_rows_see_all", "earthmapper_jax/models/layout.py",
     'return block_causal_mask(lay["scale"], q_group=group, within_scale="ordered")',
     'return block_causal_mask(lay["scale"], q_group=group, within_scale="all")',
     "tests/test_loss_masking.py -k eq10"),
    ("condition_half_in_loss", "earthmapper_jax/train/earthmapper_task.py",
     "skip_sat | (direction == SAT)", "skip_sat", "tests/test_loss_masking.py -k target_tokens"),
    ("directed_row_drops_target", "earthmapper_jax/train/earthmapper_task.py",
     "which = jnp.where(directed, cond_m == MAP, which)", "which = which",
     "tests/test_loss_masking.py -k condition_half"),
    ("ce_mean_over_all_tokens", "earthmapper_jax/train/earthmapper_task.py",
     "jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)", "jnp.sum(x * w) / x.size",
     "tests/test_loss_masking.py -k target_tokens"),
    ("si_counts_dropped_tokens", "earthmapper_jax/train/earthmapper_task.py",
     'si, _ = semantic.scale_mean(per_tok, lay["scale"], len(pn), keep)',
     'si, _ = semantic.scale_mean(per_tok, lay["scale"], len(pn))',
     "tests/test_loss_masking.py -k target_tokens"),
    # GAN stop-gradients (tests/test_gan_gradients.py)
    ("g_adv_updates_disc", "earthmapper_jax/tokenizer/losses.py",
     'd_frozen = jax.lax.stop_gradient(params["disc"])', 'd_frozen = params["disc"]',
     "tests/test_gan_gradients.py -k adversarial"),
    ("d_loss_updates_vae", "earthmapper_jax/tokenizer/losses.py",
     "jax.lax.stop_gradient(rec))", "rec)", "tests/test_gan_gradients.py -k discriminator_loss"),
    # sampling (tests/test_sampling_distribution.py)
    ("filter_ignores_temperature", "earthmapper_jax/sampling/filtering.py",
     "logits = logits.astype(jnp.float32) / temperature", "logits = logits.astype(jnp.float32)",
     "tests/test_sampling_distribution.py -k sample_tokens_follows"),
    ("top_p_threshold", "earthmapper_jax/sampling/filtering.py",
     "remove = cum <= (1.0 - top_p)", "remove = cum < top_p",
     "tests/test_sampling_distribution.py -k sample_tokens_follows"),
    ("var_sampler_ignores_temperature", "earthmapper_jax/sampling/var_sampler.py",
     "idx = sample_tokens(k_sample, logits, top_k, top_p, temperature)",
     "idx = sample_tokens(k_sample, logits, top_k, top_p, 1.0)", "tests/test_sampling_distribution.py -k var_sampler"),
    ("joint_sampler_ignores_temperature", "earthmapper_jax/sampling/earthmapper_sampler.py",
     'lg = lg / knobs["temperature"]', "lg = lg", "tests/test_sampling_distribution.py -k joint_sampler"),
    # conventions (tests/test_conventions.py)
    ("lat_lon_swapped", "earthmapper_jax/models/geo.py",
     "[sin_embed(safe[:, 0], self.num_freqs), sin_embed(safe[:, 1], self.num_freqs)], -1",
     "[sin_embed(safe[:, 1], self.num_freqs), sin_embed(safe[:, 0], self.num_freqs)], -1",
     "tests/test_conventions.py -k latitude_then_longitude"),
    ("si_tap_off_by_one", "earthmapper_jax/models/earthmapper.py",
     "capture = self.si_layer - 1 if self.si_layer else None", "capture = self.si_layer if self.si_layer else None",
     "tests/test_conventions.py -k semantic_infusion"),
    # mixed precision (tests/test_bf16.py)
    ("ffn_in_fp32", "earthmapper_jax/models/blocks.py",
     'h = nn.Dense(self.hidden, dtype=self.dtype, name="fc1",', 'h = nn.Dense(self.hidden, dtype=jnp.float32, name="fc1",',
     "tests/test_bf16.py -k matmuls"),
]


def run(only=(), timeout=1200):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for d in ("earthmapper_jax", "configs", "tests", "data_prep"):
            shutil.copytree(ROOT / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
        for f in ("setup.cfg", "pyproject.toml"):
            shutil.copy(ROOT / f, tmp / f)
        for name, path, old, new, selection in MUTANTS:
            if only and name not in only:
                continue
            src = (ROOT / path).read_text()
            if src.count(old) != 1:
                sys.exit(f"mutant {name}: the line to mutate occurs {src.count(old)} times in {path}; update tests/mutants.py")
            (tmp / path).write_text(src.replace(old, new))
            t0 = time.time()
            try:
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                       *selection.split()], cwd=tmp, env={**os.environ, "PYTHONPATH": str(tmp)},
                                      capture_output=True, text=True, timeout=timeout)
                killed, last = proc.returncode != 0, (proc.stdout.strip().splitlines() or ["?"])[-1]
            except subprocess.TimeoutExpired:
                killed, last = True, "timed out (counted as killed)"
            finally:
                (tmp / path).write_text(src)
            rows.append((name, killed, time.time() - t0))
            print(f"{'KILLED ' if killed else 'SURVIVED'} {name:36s} {time.time() - t0:6.0f}s  {last}", flush=True)
    n_killed = sum(k for _, k, _ in rows)
    print(f"{n_killed}/{len(rows)} killed")
    return 0 if n_killed == len(rows) else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=())
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args()
    sys.exit(run(set(args.only), args.timeout))
