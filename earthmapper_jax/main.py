"""Trains a model from an ml_collections config: the tokenizer, EarthMapper, or the toy model.

    python -m earthmapper_jax.main --config configs/FILE.py[:ARG] --workdir DIR [--config.x=y ...]

Kept short on purpose: the logic is in `earthmapper_jax.train.trainer.train_and_evaluate`,
which tests and notebooks call directly.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from earthmapper_jax.errors import EarthMapperError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    from earthmapper_jax.train.trainer import train_and_evaluate  # jax & co.: after flag parsing

    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except EarthMapperError as e:
        print(f"train: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"train: {summary['stopped']} at step {summary['step']}; workdir {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
