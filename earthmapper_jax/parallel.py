"""Process pools that are safe next to JAX, and an order-preserving parallel map (progress
bars: earthmapper_jax/progress.py)."""

import contextlib
import multiprocessing
import sys
from typing import Callable, Iterable, Iterator


def jax_backend_started() -> bool:
    """True once JAX has started a backend (and its threads) in this process. Importing jax
    alone (grain does) starts no threads, so forking is still safe then."""
    xb = sys.modules.get("jax._src.xla_bridge")
    if xb is None:
        return False
    backends = getattr(xb, "_backends", None)
    return True if backends is None else bool(backends)  # unknown jax internals: be safe


def pool_context():
    """`fork` (fast: workers inherit the imports) unless JAX's threads run: then `spawn`, since
    forking a multithreaded process can deadlock."""
    return multiprocessing.get_context("spawn" if jax_backend_started() else "fork")


@contextlib.contextmanager
def worker_pool(workers: int):
    """A process pool (None when workers <= 1). Open it before starting threads (progress bars)."""
    if workers <= 1:
        yield None
        return
    with pool_context().Pool(workers) as pool:
        yield pool


def imap_ordered(pool, fn: Callable, items: Iterable, chunksize: int = 8) -> Iterator:
    """`map(fn, items)` on `pool` (in-process when None), results in input order, so the output
    never depends on the number of workers."""
    return map(fn, items) if pool is None else pool.imap(fn, items, chunksize=chunksize)


def ordered_imap(fn: Callable, items: Iterable, workers: int, chunksize: int = 8) -> Iterator:
    """`imap_ordered` on a pool of `workers` processes opened for the duration."""
    with worker_pool(workers) as pool:
        yield from imap_ordered(pool, fn, items, chunksize)

