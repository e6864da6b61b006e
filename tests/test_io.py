"""The .pth reader/writer and the model-directory format."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io import checkpoint, pth


def _state_dict():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "steps": np.arange(3, dtype=np.int64),
        "scalar": np.array(2.5, np.float32),
        "half": rng.standard_normal(5).astype(np.float16),
    }


def test_pth_round_trip_restricted_reader(tmp_path):
    sd = _state_dict()
    pth.save_state_dict(tmp_path / "w.pth", sd)
    out = pth._load_without_torch(str(tmp_path / "w.pth"))
    flat = pth._flatten_state_dict(out, "w.pth")
    assert list(flat) == list(sd)
    for k, v in sd.items():
        assert flat[k].dtype == v.dtype and flat[k].shape == v.shape
        np.testing.assert_array_equal(flat[k], v)


def test_pth_public_loader_and_wrappers(tmp_path):
    sd = _state_dict()
    pth.save_state_dict(tmp_path / "w.pth", sd)
    np.testing.assert_array_equal(pth.load_state_dict(tmp_path / "w.pth")["conv.bias"], sd["conv.bias"])
    # a trainer-style wrapper dict is unwrapped
    wrapped = pth._flatten_state_dict({"epoch": 3, "model": sd}, "x")
    assert set(wrapped) == set(sd)


def test_pth_truncated_and_garbage(tmp_path):
    pth.save_state_dict(tmp_path / "w.pth", _state_dict())
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.pth"):
        pth.load_state_dict(tmp_path / "t.pth")
    (tmp_path / "g.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        pth.load_state_dict(tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match="no such"):
        pth.load_state_dict(tmp_path / "missing.pth")


def test_pth_refuses_foreign_globals(tmp_path):
    import io
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    pickle.dump({"x": Evil()}, buf, protocol=2)
    with zipfile.ZipFile(tmp_path / "e.pth", "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
    with pytest.raises(CheckpointError, match="not allowed|not a"):
        pth._flatten_state_dict(pth._load_without_torch(str(tmp_path / "e.pth")), "e")


def test_model_directory_round_trip(tmp_path):
    params = {"enc": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.zeros(2, np.float32)}
    d = checkpoint.save_params(tmp_path / "m", params, {"ch": 32, "patch_nums": (1, 2)}, kind="tokenizer")
    restored, cfg = checkpoint.load_params(d, expect_kind="tokenizer")
    np.testing.assert_array_equal(restored["enc"]["w"], params["enc"]["w"])
    assert cfg == {"ch": 32, "patch_nums": [1, 2]}
    with pytest.raises(CheckpointError, match="expected 'var'"):
        checkpoint.load_params(d, expect_kind="var")
    with pytest.raises(CheckpointError, match="not empty"):
        checkpoint.save_params(d, params, {}, kind="tokenizer")
    # no temp directories left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_model_directory_shape_mismatch(tmp_path):
    params = {"w": np.zeros((2, 3), np.float32)}
    d = checkpoint.save_params(tmp_path / "m", params, {}, kind="var")
    with pytest.raises(CheckpointError, match=r"\[.w.\] has shape \(2, 3\), expected \(4, 3\)"):
        checkpoint.load_params(d, target={"w": np.zeros((4, 3), np.float32)})


def test_quiet_on_failure_keeps_output_of_success_and_drops_late_writes_of_failure():
    """A thread that writes to fd 2 shortly after the block failed (TensorStore's readers after a
    failed restore) is dropped; what a successful block writes reaches stderr unchanged."""
    code = textwrap.dedent("""
        import os, threading
        from earthmapper_jax.errors import quiet_on_failure
        with quiet_on_failure():
            os.write(2, b"kept\\n")
        try:
            with quiet_on_failure():
                os.write(2, b"early\\n")
                threading.Timer(0.05, lambda: os.write(2, b"late\\n")).start()
                raise ValueError
        except ValueError:
            pass
        os.write(2, b"end\\n")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "kept\nend\n"
