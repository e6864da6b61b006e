"""The issue-6 benchmark orchestrator's pure parts (flags, presets, table); no framework runs.

The benchmark itself is exercised end to end by `benchmarks/gpu_vs_pytorch.py --cpu-smoke`
(minutes; timing belongs in benchmarks/, not in the test suite).
"""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "gpu_vs_pytorch", ROOT / "benchmarks" / "gpu_vs_pytorch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(mod, argv):
    parser = mod.build_parser()
    args = mod.apply_modes(parser.parse_args(argv), vars(parser.parse_args([])))
    args.argv = argv
    return args


def test_flops_formula_matches_perf_notes():
    mod = _load()
    # PERF-NOTES: about 60 TFLOP per d16 batch-64 step without the tokenizer
    tflop = mod.train_flops(680, 64, 1024, 16, 4096) / 1e12
    assert 55 < tflop < 65


def test_presets_keep_explicit_flags():
    mod = _load()
    smoke = _args(mod, ["--cpu-smoke"])
    assert smoke.models == "var-tiny,em-tiny" and smoke.attention == "xla"
    assert smoke.peak_tflops == 0.0
    explicit = _args(mod, ["--cpu-smoke", "--models", "var-tiny", "--steps", "3"])
    assert explicit.models == "var-tiny" and explicit.steps == 3
    quick = _args(mod, ["--quick"])
    assert quick.models == "var-d16,em-d16" and quick.budget_s <= 200


def test_peak_by_card():
    mod = _load()
    assert mod.peak_for("NVIDIA H200", None) == 790.0
    assert mod.peak_for("NVIDIA H100 80GB HBM3", None) == 798.0
    assert mod.peak_for("NVIDIA H200", 500.0) == 500.0
    assert mod.peak_for("NVIDIA H200", 0.0) is None
    assert mod.peak_for("cpu", None) is None


def test_table_ratios_and_targets():
    mod = _load()
    args = _args(mod, ["--models", "var-d16"])
    pt = [
        dict(side="pytorch", case="var-d16-train-tok", batch=64, ms=454.0, img_s=141.0,
             tflops=131.0, mfu=0.166, peak_gib=45.1),
        dict(side="pytorch", case="var-d16-sample-b64", batch=64, ms=457.0, img_s=140.0),
        dict(side="pytorch", case="var-d16-sample-b1", batch=1, ms=135.0, img_s=7.4),
    ]
    ours = [
        dict(side="jax", case="var-d16-train-tok", batch=64, ms=200.0, img_s=320.0,
             tflops=300.0, mfu=0.38, peak_gib=40.0, plan_gib=39.0, compile_s=12.0),
        dict(side="jax", case="var-d16-train-pretok", batch=64, ms=150.0, img_s=426.0),
        dict(side="jax", case="var-d16-train-pretok@xla", batch=64,
             status="error: XlaRuntimeError: RESOURCE_EXHAUSTED"),
        dict(side="jax", case="var-d16-sample-b64", batch=64, ms=150.0, img_s=427.0),
        dict(side="jax", case="var-d16-sample-b1", batch=1, ms=25.0, img_s=40.0),
    ]
    text = mod.make_tables(args, pt, ours, dict(device="NVIDIA H200", peak_tflops=790.0))
    assert "| var-d16-train-tok | ours | 64 | 200 | 320 | 300 | 38.0% | 40 | 39 | 12 | 2.27× |" in text
    assert "RESOURCE_EXHAUSTED" in text
    assert "| VAR-d16 train, tokenising | 141 img/s | 320 img/s | 2.27× | ≥ 2× | yes |" in text
    assert "| VAR-d16 train, pre-tokenised (vs PyTorch tokenising) | 141 img/s | 426 img/s | 3.02× | ≥ 3× | yes |" in text
    assert "| VAR-d16 sample batch 1 latency | 135 ms | 25 ms | 5.40× faster | < 40 ms | yes |" in text
    assert "| VAR-d16 train peak memory | 45.1 GiB | 40.0 GiB | 0.89 | ≤ 1 | yes |" in text
    assert mod.FLOP_FORMULA in text


def test_cpu_mode_arguments():
    """--cpu (issue 18): real VAR-d16 shapes, fp32 both sides, one thread, explicit flags win."""
    mod = _load()
    cpu = _args(mod, ["--cpu"])
    assert cpu.models == "var-d16" and cpu.batch == "d16=2" and cpu.sample_batch == 4
    assert cpu.dtype == "float32" and cpu.tok_dtype == "float32" and cpu.attention == "xla_bias"
    assert cpu.scan == 1 and cpu.sample_scan == 0
    assert set(cpu.cases.split(",")) == {"train-pretok", "train-tok", "tokenise", "sample",
                                         "sample1"}
    assert cpu.compile_threads == 1 and cpu.warmup == 0
    assert _args(mod, ["--cpu", "--steps", "5"]).steps == 5
    cmd = mod.torch_cmd(cpu, "/tmp/t.jsonl", 0.0)
    for flag, value in (("--amp", "none"), ("--sample-amp", "none"), ("--threads", "1"),
                        ("--device", "cpu"), ("--warmup", "1"), ("--batch", "16=2"),
                        ("--sample-batch", "4")):
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "--smoke" not in cmd and "--profile" not in cmd
    env = mod.cpu_env({"XLA_FLAGS": "--xla_dump_to=/tmp/x"}, cpu)
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x " + mod.CPU_XLA_FLAGS
    assert env["JAX_PLATFORMS"] == "cpu" and env["OMP_NUM_THREADS"] == "1"
    gpu = _args(mod, [])
    assert "XLA_FLAGS" not in mod.cpu_env({}, gpu) and "--amp" not in mod.torch_cmd(gpu, "x", 0.0)
    assert "one thread per side" in mod.pinning(cpu)


def test_cpu_mode_rejects_impossible_flags():
    mod = _load()
    for argv in (["--cpu", "--cpu-smoke"], ["--cpu", "--cpu-core", "4096"]):
        try:
            mod.check_args(_args(mod, argv))
        except SystemExit as e:
            assert str(e).startswith("--cpu")
        else:
            raise AssertionError(f"{argv} accepted")


def test_cpu_table_ratio_is_pytorch_time_over_ours():
    mod = _load()
    args = _args(mod, ["--cpu"])
    pt = [dict(side="pytorch", case="var-d16-train-pretok", batch=2, ms=17400.0, img_s=0.115),
          dict(side="pytorch", case="var-d16-sample-b1", batch=1, ms=9230.0, img_s=0.108)]
    ours = [dict(side="jax", case="var-d16-train-pretok", batch=2, ms=29600.0, img_s=0.0676,
                 first_call_s=31.0, compile_s=12.5),
            dict(side="jax", case="var-d16-train-pretok@unrolled", batch=2, ms=17400.0,
                 img_s=0.115, compile_s=20.0),
            dict(side="jax", case="var-d16-sample-b1", batch=1, status="error: boom")]
    text = "\n".join(mod.cpu_table(args, pt, ours))
    assert "| train step, pre-tokenised, B 2 | 29.6 s | 17.4 s | 0.59× | ≥ 1.3× | 31 s | 12.5 s |" in text
    assert "| train step, pre-tokenised, B 2 @unrolled | 17.4 s | 17.4 s | 1.00× |" in text
    assert "| sample + decode, B 1 | error: boom | 9.23 s | – | ≥ 1.0× |" in text
