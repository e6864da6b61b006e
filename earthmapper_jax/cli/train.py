"""`earthmapper train --config configs/FILE.py[:ARG] --workdir DIR [--config.x=y ...]`.

The same as `python -m earthmapper_jax.main`: ml_collections config-file semantics (the text
after ':' goes to get_config, `--config.a.b=v` overrides any field with type checking).
"""

import argparse
import difflib
import os

from absl import flags
from ml_collections import config_flags

from earthmapper_jax.errors import InputError
from earthmapper_jax.train import preflight


def split_overrides(args):
    """(`--config.a.b=v` overrides, the other arguments); `--config.a.b v` becomes `...=v`."""
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
    return overrides, rest


class _TrainParser(argparse.ArgumentParser):
    """Keeps `--config.a.b=v` / `--config.a.b v` overrides aside for ml_collections."""

    def parse_known_args(self, args=None, namespace=None):
        overrides, rest = split_overrides(args)
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


def _dotted_keys(node, prefix=""):
    out = []
    for k, v in node.items():
        out.append(prefix + k)
        if hasattr(v, "items"):
            out += _dotted_keys(v, f"{prefix}{k}.")
    return out


def _check_override_keys(config, config_arg, overrides):
    """InputError for the first override naming no field, with the closest valid key."""
    keys = _dotted_keys(config)
    for o in overrides:
        if not o.startswith("--config."):
            continue  # the value of a space-separated override: --config.optim.base_lr 0.5
        key = o.split("=", 1)[0][len("--config."):]
        if key in keys:
            continue
        near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"; did you mean --config.{near[0]}?" if near else ""
        raise InputError(f"{config_arg} has no field {key!r} (from {o}){hint}")


def _load(config_arg, argv):
    fv = flags.FlagValues()
    # sys_argv: the overrides are read from this list, not from the process's sys.argv.
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    fv(argv)
    config = fv.config
    config.keys()  # the flag loads lazily: surface a missing/broken file here
    return config


def load_config(config_arg: str, overrides=()):
    """ConfigDict of `FILE.py[:ARG]` with `--config.x=y` overrides, as main.py's flag does."""
    path = config_arg.split(":", 1)[0]
    if not os.path.isfile(path):
        raise InputError(f"no config file {path} (expected configs/FILE.py[:ARG])")
    try:
        if overrides:  # names first: a typo gets its closest valid key, not a traceback
            _check_override_keys(_load(config_arg, ["earthmapper", f"--config={config_arg}"]),
                                 config_arg, overrides)
        return _load(config_arg, ["earthmapper", f"--config={config_arg}", *overrides])
    except (flags.Error, TypeError, ValueError, IOError, AttributeError, KeyError) as e:
        cause = e.__cause__ or e.__context__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1].strip()
        raise InputError(f"config {config_arg} failed to load: {first}") from None


def run(args):
    config = load_config(args.config, args.config_overrides)
    check_before_training(config)
    from earthmapper_jax.train.trainer import train_and_evaluate  # JAX & co.: after the checks

    summary = train_and_evaluate(config, args.workdir)
    print(f"train: {summary['stopped']} at step {summary['step']}; workdir {args.workdir}")
    return 0


def check_before_training(config):
    """The trainer's own pre-flight checks (train/preflight.py), run before importing JAX so
    that a run that cannot work stops at once; the trainer repeats them (idempotent) for
    callers of train_and_evaluate."""
    for note in preflight.check(config):
        print(note, flush=True)
