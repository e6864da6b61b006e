"""JAX's persistent compilation cache, on by default for sampling (CLI and notebook).

    enable_compilation_cache(directory=None) -> pathlib.Path | None

Compiling the sampler is what a user waits for first (benchmarks/RESULTS.md, "compile time");
with the cache a second process loads the compiled programs from disk instead of compiling.
The directory is, first found: the argument; $EARTHMAPPER_CACHE; ~/.cache/earthmapper/jax.
EARTHMAPPER_CACHE=off (or an empty value) turns it off (returns None). Every program is cached
(minimum compile time 0 s): the sampler compiles once per configuration, and even a small one
costs seconds on a CPU. Call it before the first compilation of the process.
"""

from __future__ import annotations

import os
import pathlib

ENV = "EARTHMAPPER_CACHE"
DEFAULT_DIR = pathlib.Path("~/.cache/earthmapper/jax")


def cache_dir(directory=None) -> pathlib.Path | None:
    if directory is None:
        directory = os.environ.get(ENV, str(DEFAULT_DIR))
    if str(directory).strip().lower() in ("", "off", "0", "none", "false"):
        return None
    return pathlib.Path(directory).expanduser()


def enable_compilation_cache(directory=None) -> pathlib.Path | None:
    """Points JAX's persistent compilation cache at the cache directory (see module doc)."""
    import jax

    path = cache_dir(directory)
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
