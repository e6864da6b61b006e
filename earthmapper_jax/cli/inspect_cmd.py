"""`earthmapper inspect DIR`: counts per split, and every record's CRC (and, optionally, that
every record parses and decodes, and the shards' sha256 against the manifest)."""

import hashlib
import os

from earthmapper_jax import progress as progress_lib
from earthmapper_jax.data import example, tfrecord
from earthmapper_jax.data.writer import list_splits, read_manifest, split_shards
from earthmapper_jax.errors import DataError


def inspect_dir(data_dir, *, verify: bool = True, decode: bool = False, checksums: bool = False,
                progress: bool = True) -> dict:
    """{split: {records, shards, bytes, manifest_records, ...}}; raises DataError on the first
    corrupt record (naming shard and record) or a manifest mismatch."""
    if not os.path.isdir(str(data_dir)):
        raise DataError(f"{data_dir} is not a directory")
    splits = list_splits(data_dir)
    if not splits:
        raise DataError(f"{data_dir} has no dataset (no *.manifest.json)")
    report = {}
    for split in splits:
        manifest = read_manifest(data_dir, split)
        shards = split_shards(data_dir, split)
        listed = {e["file"]: e for e in manifest["shards"]}
        n_total, n_bytes, nan_coords, sizes = 0, 0, 0, set()
        bar = progress_lib.progress(manifest["num_records"], desc=f"inspect {split}", unit="rec",
                                    enabled=progress)
        for path in shards:
            name = os.path.basename(path)
            n = 0
            if verify or decode:
                for j, (_, data) in enumerate(tfrecord.iter_records(path, verify=verify)):
                    n += 1
                    if decode:
                        rec = example.parse(data, f"{name}: record {j}")
                        a = example.decode_image(rec.satellite, f"{name}: record {j} satellite")
                        b = example.decode_image(rec.map, f"{name}: record {j} map")
                        if a.shape != b.shape:
                            raise DataError(f"{name}: record {j}: satellite {a.shape} and map {b.shape} differ")
                        sizes.add(a.shape[:2])
                        nan_coords += rec.latitude != rec.latitude
                    bar.update()
            else:
                n = len(tfrecord.load_offsets(path)) - 1
            if n != listed[name]["num_records"]:
                raise DataError(f"{name}: {n} records, its manifest says {listed[name]['num_records']}")
            if checksums:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                if h.hexdigest() != listed[name]["sha256"]:
                    raise DataError(f"{name}: sha256 differs from the manifest's (modified or corrupt shard)")
            n_total += n
            n_bytes += os.path.getsize(path)
        bar.close()
        report[split] = {"records": n_total, "shards": len(shards), "bytes": n_bytes,
                         "converter": manifest.get("converter", {}).get("name", ""),
                         "image_size": manifest.get("image_size")}
        if decode:
            report[split].update(nan_coords=int(nan_coords), sizes=sorted(sizes))
    return report


def register(subparsers):
    p = subparsers.add_parser("inspect", help="counts per split; verify every record's CRC",
                              description=__doc__)
    p.add_argument("data_dir", metavar="DIR")
    p.add_argument("--no-verify", action="store_true", help="count from the indexes only (no CRC pass)")
    p.add_argument("--decode", action="store_true", help="also parse and decode every record")
    p.add_argument("--checksums", action="store_true", help="also compare each shard's sha256 with the manifest")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args):
    report = inspect_dir(args.data_dir, verify=not args.no_verify, decode=args.decode, checksums=args.checksums,
                         progress=not args.quiet)
    for split, r in report.items():
        line = (f"{split:>8}: {r['records']} records in {r['shards']} shard(s), {r['bytes'] / 2**20:.1f} MiB"
                f" [{r['converter'] or '?'}, size {r['image_size']}]")
        if "nan_coords" in r:
            line += f", {r['nan_coords']} without coordinates, image sizes {r['sizes']}"
        print(line)
    checks = ["CRC of every record" if not args.no_verify else "counts only"]
    checks += ["decode"] * args.decode + ["sha256"] * args.checksums
    print(f"ok ({', '.join(checks)})")
    return 0
