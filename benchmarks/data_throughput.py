"""Input-pipeline throughput: decoded + augmented pairs per second per CPU core at 256².

Writes a synthetic split with both images PNG, and one with both JPEG (q95), then times the
real pipeline (`earthmapper_jax.data.pipeline`: CRC-checked read, parse, decode, paired
crop/flip/rot90, resize, normalise, batch) in ONE thread (`read_threads=1`, no workers), i.e.
per core. Also times decode alone and the synthetic generator.

    .venv/bin/python benchmarks/data_throughput.py [--n 256] [--size 256] [--batch 32] [--seconds 10]
"""

import argparse
import os
import tempfile
import time

import numpy as np


def _write(d, n, size, fmt):
    from earthmapper_jax.data import synthetic_city as synthetic
    from earthmapper_jax.data import example
    from earthmapper_jax.data.writer import ShardedWriter

    with ShardedWriter(d, "train") as w:
        for p in synthetic.iter_pairs(n, size, seed=0, workers=os.cpu_count() or 1):
            w.write(example.encode(example.PairRecord(
                satellite=example.encode_image(p.satellite, fmt), map=example.encode_image(p.map, fmt),
                satellite_format=fmt, map_format=fmt, tile_id=p.tile_id, latitude=p.lat, longitude=p.lon,
                height=size, width=size)))
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".tfrecord")) / n


def _rate(make_iter, batch, seconds):
    """(pairs per wall second, pairs per CPU second of this process). On a shared, loaded box
    the second is the per-core figure: it counts only the CPU time the pipeline really used."""
    it = make_iter()
    next(it)  # warm-up (file opening, first decode)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    from earthmapper_jax.data import synthetic_city as synthetic
    from earthmapper_jax.data import example, pipeline, tfrecord
    from earthmapper_jax.data.writer import split_shards

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("png", "jpeg"):
            d = os.path.join(tmp, fmt)
            bytes_per_pair = _write(d, args.n, args.size, fmt)
            kw = dict(process_index=0, process_count=1, read_threads=1, seed=0)
            aug = _rate(lambda: pipeline(d, "train", args.batch, augment=True, image_size=args.size, **kw),
                        args.batch, args.seconds)
            plain = _rate(lambda: pipeline(d, "train", args.batch, augment=False, image_size=args.size, **kw),
                          args.batch, args.seconds)
            # Decode alone (both images of every record), to see where the time goes.
            recs = [example.parse(r) for p in split_shards(d, "train") for _, r in tfrecord.iter_records(p)]
            c0 = time.process_time()
            for r in recs:
                example.decode_image(r.satellite)
                example.decode_image(r.map)
            dec = len(recs) / (time.process_time() - c0)
            rows.append((fmt, bytes_per_pair / 1024, aug, plain, dec))
    c0 = time.process_time()
    for i in range(100):
        synthetic.make_pair(i, args.size)
    gen = 100 / (time.process_time() - c0)

    print(f"\n{args.size}x{args.size}, batch {args.batch}, one thread; pairs per CPU-second (wall-clock rate in"
          " brackets, lower when the box is shared):\n")
    print("| encoding | KiB/pair | pipeline + augment | pipeline, no augment | decode only |")
    print("|---|---|---|---|---|")
    for fmt, kib, aug, plain, dec in rows:
        print(f"| {fmt} | {kib:.0f} | {aug[1]:.0f} ({aug[0]:.0f}) | {plain[1]:.0f} ({plain[0]:.0f}) | {dec:.0f} |")
    print(f"\nsynthetic generator: {gen:.0f} pairs per CPU-second ({gen * 60:.0f}/min per core)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    slow = min(r[2][1] for r in rows)
    for b in (16, 32, 64, 256):
        print(f"batch {b}: one core feeds a step every {b / slow * 1000:.0f} ms (slowest encoding, augmented)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
