"""`earthmapper train --config configs/FILE.py[:ARG] --workdir DIR [--config.x=y ...]`.

The same as `python -m earthmapper_jax.main`: ml_collections config-file semantics (the text
after ':' goes to get_config, `--config.a.b=v` overrides any field with type checking).
"""

import argparse
import os

from earthmapper_jax.errors import InputError


class _TrainParser(argparse.ArgumentParser):
    """Keeps `--config.a.b=v` / `--config.a.b v` overrides aside for ml_collections."""

    def parse_known_args(self, args=None, namespace=None):
        args, overrides, rest, i = list(args or []), [], [], 0
        while i < len(args):
            a = args[i]
            if a.startswith("--config."):
                if "=" not in a and i + 1 < len(args):
                    a, i = f"{a}={args[i + 1]}", i + 1
                overrides.append(a)
            else:
                rest.append(a)
            i += 1
        ns, extra = super().parse_known_args(rest, namespace)
        ns.config_overrides = overrides
        return ns, extra


def register(subparsers):
    previous = subparsers._parser_class  # argparse has no public hook for a subparser class
    subparsers._parser_class = _TrainParser
    try:
        p = subparsers.add_parser("train", help="train the tokenizer or EarthMapper from a config",
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    finally:
        subparsers._parser_class = previous
    p.add_argument("--config", required=True, metavar="FILE.py[:ARG]",
                   help="config file (configs/*.py) and its optional argument")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics, samples (local or gs://)")
    p.set_defaults(func=run)


def load_config(config_arg: str, overrides=()):
    """ConfigDict of `FILE.py[:ARG]` with `--config.x=y` overrides, as main.py's flag does."""
    from absl import flags
    from ml_collections import config_flags

    path = config_arg.split(":", 1)[0]
    if not os.path.isfile(path):
        raise InputError(f"no config file {path} (expected configs/FILE.py[:ARG])")
    argv = ["earthmapper", f"--config={config_arg}", *overrides]
    fv = flags.FlagValues()
    # sys_argv: the overrides are read from this list, not from the process's sys.argv.
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    try:
        fv(argv)
        config = fv.config
        config.keys()  # the flag loads lazily: surface a missing/broken file here
        return config
    except (AttributeError, KeyError) as e:
        field = str(e).strip("\"'")
        raise InputError(f"config {config_arg}: no field {field!r} to override "
                         f"(overrides: {' '.join(overrides)})") from None
    except (flags.Error, TypeError, ValueError, IOError) as e:
        cause = e.__cause__ or e.__context__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1].strip()
        raise InputError(f"config {config_arg} failed to load: {first}") from None


def run(args):
    from earthmapper_jax.train.trainer import train_and_evaluate

    config = load_config(args.config, args.config_overrides)
    summary = train_and_evaluate(config, args.workdir)
    print(f"train: {summary['stopped']} at step {summary['step']}; workdir {args.workdir}")
    return 0
