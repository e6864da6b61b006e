"""Atomic writes: a file or a folder appears under its final name complete, or not at all.

The one home for "write to a temporary sibling, then rename". Every writer of the package
(images, JSON, manifests, shards, model directories) goes through these, so an interrupted
run never leaves a half-written file under a name a later run would trust.

    atomic_path(path)            context manager -> a temporary sibling path (same suffix);
                                 renamed to `path` on success, removed on error
    temp_sibling(path)           the temporary sibling itself, for a writer that streams into
                                 it and renames it later (TFRecord shards)
    atomic_open(path, mode="wb") context manager -> an open file object, same rules
    write_bytes(path, data) / write_text(path, text) / write_json(path, obj)
    atomic_dir(path, overwrite=False)
                                 context manager -> an empty staging folder beside `path`;
                                 moved into place on success (replacing `path` when overwrite),
                                 removed on error
    is_remote(path)              True for object-store URLs (gs://, s3://): there a single
                                 upload is atomic by itself and no rename is needed

Temporary names start with "." and contain ".tmp-", so listings and globs skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import tempfile
from typing import Iterator

TMP_TAG = ".tmp-"


def is_remote(path) -> bool:
    return "://" in str(path)


def temp_sibling(path) -> pathlib.Path:
    """A new empty file beside `path` under a temporary name (same suffix); the caller renames
    it over `path` or removes it. Its mode is what `open(path, "w")` would give (0666 less the
    umask), not mkstemp's private 0600: the renamed file is a dataset or an export others read."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}{TMP_TAG}{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` (same suffix, so format-by-extension writers work)."""
    path = pathlib.Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """An open file that becomes `path` only when the block finishes without an error."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_bytes(path, data: bytes) -> None:
    if is_remote(path):
        from etils import epath

        epath.Path(path).write_bytes(data)
        return
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """A staging folder that replaces `path` as a whole once the block succeeds.

    With overwrite=False an existing non-empty `path` is left alone and FileExistsError is
    raised before anything is written (callers turn it into their own one-line error)."""
    path = pathlib.Path(path).absolute()
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent))
    try:
        yield stage
        if path.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(stage, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, path)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
