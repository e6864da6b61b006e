"""`earthmapper prepare {cnsatmap,pix2pix,folders,synthetic,...}`: raw tiles -> TFRecord shards.

Each dataset kind is a module with `register(subparsers)` adding its parser (and `func`);
PREPARE_MODULES lists them in `--help` order. Modules not present yet are skipped.
"""

import importlib

PREPARE_MODULES = (
    "data_prep.cnsatmap",
    "data_prep.pix2pix_maps",
    "data_prep.folders",
    "data_prep.synthetic",
    "earthmapper_jax.cli.prepare_tokens",
)


def register(subparsers):
    p = subparsers.add_parser("prepare", help="convert datasets to TFRecord shards (docs/data.md)",
                              description="Convert a dataset into TFRecord shards + manifests (see docs/data.md).")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    for name in PREPARE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
