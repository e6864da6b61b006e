"""Reading and writing PyTorch `.pth` state dicts as numpy arrays.

`load_state_dict` uses `torch.load(weights_only=True)` when torch is installed (the `convert`
extra). Without torch it reads the same zip format with a restricted unpickler that only
accepts the handful of globals a plain state dict needs, so no pickle code can run either way.

`save_state_dict` writes the real torch zip format without torch; the tests use it to make
random-weight checkpoints in the layouts of VAR, DINOv2, ... that both readers accept.

Format (torch >= 1.6 `_use_new_zipfile_serialization`): a zip archive `<name>/data.pkl`,
`<name>/data/<key>` (raw little-endian storages), `<name>/version`, `<name>/byteorder`. Tensors
are pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
backward_hooks)` with the storage as a persistent id `('storage', <dtype>Storage, key, location,
numel)`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io import files

try:  # bfloat16 numpy dtype ships with jax
    from ml_dtypes import bfloat16 as _bf16
except ImportError:  # pragma: no cover
    _bf16 = None

# torch storage class name <-> numpy dtype
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
if _bf16 is not None:
    _STORAGE_DTYPES["BFloat16Storage"] = np.dtype(_bf16)
_DTYPE_STORAGES = {v: k for k, v in _STORAGE_DTYPES.items()}


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Returns the flat state dict in `path` as {key: numpy array}.

    Accepts a bare state dict or the usual wrappers ({'state_dict': ...}, {'model': ...},
    {'trainer': {'var_wo_ddp': ...}} as VAR's trainer saves). Raises CheckpointError for a
    missing, truncated or non-state-dict file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        import torch  # noqa: F401
    except ImportError:
        obj = _load_without_torch(path)
    else:
        obj = _load_with_torch(path)
    return _flatten_state_dict(obj, path)


def _load_with_torch(path):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, disallowed global
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_short(e)})") from None

    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype == torch.bfloat16:
                return x.float().numpy().astype(_bf16)
            return x.numpy().copy()
        if isinstance(x, dict):
            return {k: to_numpy(v) for k, v in x.items()}
        return x

    return to_numpy(obj)


def _short(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


class _StorageRef:
    def __init__(self, dtype, data):
        self.dtype, self.data = dtype, data


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    itemsize = storage.dtype.itemsize
    flat = np.frombuffer(storage.data, dtype=storage.dtype)
    if not size:
        return np.array(flat[offset])
    need = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if need > flat.size:
        raise CheckpointError("tensor extends past the end of its storage (truncated file?)")
    base = flat[offset:]
    arr = np.lib.stride_tricks.as_strided(
        base, shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(arr)  # own, contiguous copy


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Knows only what a state dict needs; anything else is refused, never imported."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._zf, self._prefix = zf, prefix

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        dtype = _STORAGE_DTYPES.get(storage_type if isinstance(storage_type, str) else "")
        if dtype is None:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        try:
            data = self._zf.read(f"{self._prefix}/data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} missing from the archive") from None
        return _StorageRef(dtype, data)


def _load_without_torch(path):
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise CheckpointError(f"{path}: zip archive without data.pkl, not a torch checkpoint")
            prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
            byteorder = f"{prefix}/byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt zip: {_short(e)})"
        ) from None
    except (pickle.UnpicklingError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a plain state dict ({_short(e)})") from None


_WRAPPER_KEYS = ("state_dict", "model", "module", "var_wo_ddp", "vae_wo_ddp", "trainer")


def _flatten_state_dict(obj, path) -> dict[str, np.ndarray]:
    # Unwrap common containers until we reach a {str: array} mapping.
    for _ in range(4):
        if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: no state dict found (top level is {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            out[str(k).removeprefix("module.")] = v
        elif np.isscalar(v) or v is None:
            continue  # e.g. a stored epoch number beside the tensors
        else:
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    if not out:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return out


# ----------------------------------------------------------------------------- writing


class _Global:
    """A reference to `module.name` written into the pickle without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce insists on a callable; never called
        raise TypeError(f"{self.module}.{self.name} is a pickle reference only")


class _TensorRecord:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _TorchFormatPickler(pickle._Pickler):  # the pure-Python pickler lets us add dispatch entries
    dispatch = dict(pickle._Pickler.dispatch)

    def save_reference(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_tensor(self, obj):
        arr = obj.array
        storage = _Global("torch", _DTYPE_STORAGES[arr.dtype])
        self.persistent_storages.append((obj.key, arr))
        storage_pid = ("storage", storage, obj.key, "cpu", arr.size)
        size = tuple(int(n) for n in arr.shape)
        stride = tuple(int(s) for s in (np.array(arr.strides) // max(arr.itemsize, 1)))
        args = (storage_pid, 0, size, stride, False, collections.OrderedDict())
        self.save_reduce(_Global("torch._utils", "_rebuild_tensor_v2"), args, obj=obj)

    dispatch[_Global] = save_reference
    dispatch[_TensorRecord] = save_tensor

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 5 and obj[0] == "storage":
            return obj
        return None


def save_state_dict(path, state_dict: dict[str, np.ndarray], *, archive_name: str = "archive"):
    """Writes {key: array} as a torch-loadable `.pth` (zip format) without importing torch."""
    buf = io.BytesIO()
    pickler = _TorchFormatPickler(buf, protocol=2)
    pickler.persistent_storages = []
    records = collections.OrderedDict()
    for i, (k, v) in enumerate(state_dict.items()):
        arr = np.array(v, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype not in _DTYPE_STORAGES:
            raise ValueError(f"{k}: dtype {arr.dtype} has no torch storage type")
        records[k] = _TensorRecord(str(i), arr)
    pickler.dump(records)
    with files.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive_name}/data.pkl", buf.getvalue())
        zf.writestr(f"{archive_name}/byteorder", "little")
        for key, arr in pickler.persistent_storages:
            zf.writestr(f"{archive_name}/data/{key}", arr.tobytes())
        zf.writestr(f"{archive_name}/version", "3\n")
