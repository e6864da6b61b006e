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


@pytest.fixture(scope="session")
def tiny_em_model(tmp_path_factory):
    """A tiny EarthMapper trained a few steps, exported, beside its prepared data
    (tests/tiny_em_model.py, built in a subprocess): {"model": model dir, "tokenizer":
    tokenizer dir, "data": prepared data dir with splits "train" (16) and "val" (8 pairs),
    "image_size": 16}."""
    import subprocess
    import sys

    import tiny_em_model as tiny  # tests/ is on sys.path (rootdir conftest, no __init__.py)

    root = tmp_path_factory.mktemp("tiny_em")
    res = subprocess.run([sys.executable, str(pathlib.Path(tiny.__file__)), str(root)],
                         env=tiny.env(), capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"model": root / "run" / "model", "tokenizer": root / "tokenizer", "data": root / "data",
            "image_size": tiny.MICRO_TOKENIZER["image_size"]}


# ----------------------------------------------------------------------------- mutation runs


def pytest_collection_modifyitems(config, items):
    """Under mutmut (`make mutation`, tests/mutation_score.py): the test files whose tests ran
    fastest in mutmut's clean run come first, so that a mutant one of them kills stops there
    (mutmut runs pytest -x); the order inside a file is kept, so its fixtures are built once."""
    import json

    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    stats = pathlib.Path("mutmut-stats.json")  # mutmut runs the tests from inside mutants/
    if not stats.exists():
        return
    duration = json.loads(stats.read_text()).get("duration_by_test", {})
    per_file = {}
    for item in items:
        f = item.nodeid.split("::")[0]
        per_file[f] = per_file.get(f, 0.0) + float(duration.get(item.nodeid, 0.0))
    items.sort(key=lambda item: per_file[item.nodeid.split("::")[0]])  # stable: file order kept
