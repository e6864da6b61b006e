"""Trains a model from an ml_collections config: the tokenizer, EarthMapper, or the toy model.

    python -m earthmapper_jax.main --config configs/FILE.py[:ARG] --workdir DIR [--config.x=y ...]

Kept short on purpose: the logic is in `earthmapper_jax.train.trainer.train_and_evaluate`,
which tests and notebooks call directly. The config is read exactly as `earthmapper train`
reads it (cli/train.py: the same overrides, the same one-line errors, the same checks before
anything is built); absl parses the other flags (--workdir, --verbosity, ...).
"""

import sys

from absl import app, flags, logging

from earthmapper_jax.cli.train import check_before_training, load_config, split_overrides
from earthmapper_jax.errors import EarthMapperError, print_error_line

_CONFIG = flags.DEFINE_string("config", None, "Training config file, FILE.py[:ARG].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_OVERRIDES = []  # --config.a.b=v, kept aside from absl (which knows no such flags)


def _fail(msg: str, code: int = 1):
    print_error_line(f"train: error: {msg}")
    sys.exit(code)


def _parse(argv):
    overrides, rest = split_overrides(argv[1:])
    _OVERRIDES[:] = overrides
    try:
        rest = flags.FLAGS([argv[0], *rest])
    except flags.Error as e:
        _fail(str(e).splitlines()[0], 2)
    for name in ("config", "workdir"):
        if flags.FLAGS[name].value is None:
            _fail(f"--{name} is required", 2)
    return rest


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}", 2)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    try:
        config = load_config(_CONFIG.value, _OVERRIDES)
        check_before_training(config)
        from earthmapper_jax.train.trainer import train_and_evaluate  # JAX & co.: after checks

        summary = train_and_evaluate(config, _WORKDIR.value)
    except EarthMapperError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted (second Ctrl-C): nothing saved since the last checkpoint", 130)
    print(f"train: {summary['stopped']} at step {summary['step']}; workdir {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
