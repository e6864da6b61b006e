"""The `earthmapper` command. Each subcommand lives in its own module of this package with
`register(subparsers)` adding a parser whose `func(args)` runs it."""

import argparse
import importlib
import os
import sys

from earthmapper_jax.errors import EarthMapperError

# Modules of this package that define subcommands (in `earthmapper --help` order).
SUBCOMMAND_MODULES = (
    "prepare",
    "inspect_cmd",
    "convert",
    "reconstruct",
    "train",
    "translate",
    "plot",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="earthmapper", description="EarthMapper-JAX: satellite <-> map translation."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"earthmapper_jax.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"earthmapper_jax.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except EarthMapperError as e:
        print(f"earthmapper {args.command}: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"earthmapper {args.command}: error: no such file: {e.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"earthmapper {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line; full trace on request
        if os.environ.get("EARTHMAPPER_DEBUG"):
            raise
        print(
            f"earthmapper {args.command}: internal error: {type(e).__name__}: {e} "
            "(set EARTHMAPPER_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
