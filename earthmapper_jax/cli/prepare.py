"""`earthmapper prepare {cnsatmap,pix2pix,folders,synthetic,tokens}`: raw tiles -> TFRecord
shards, and TFRecord shards -> token arrays.

Each dataset kind is a module with `register(subparsers)` adding its parser (and `func`);
PREPARE_MODULES lists them in `--help` order.
"""

from earthmapper_jax.cli import prepare_tokens
from earthmapper_jax.data_prep import cnsatmap, folders, pix2pix_maps, synthetic

PREPARE_MODULES = (cnsatmap, pix2pix_maps, folders, synthetic, prepare_tokens)


def register(subparsers):
    p = subparsers.add_parser("prepare", help="convert datasets to TFRecord shards (docs/data.md)",
                              description="Convert a dataset into TFRecord shards + manifests (see docs/data.md).")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    for module in PREPARE_MODULES:
        module.register(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
