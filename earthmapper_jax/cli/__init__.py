"""The `earthmapper` command. Each subcommand lives in its own module of this package with
`register(subparsers)` adding a parser whose `func(args)` runs it.

The subcommand modules import only light modules at their top; each `run()` imports the heavy
libraries (jax, matplotlib, the models) it needs, so `earthmapper --help` starts fast.
"""

import argparse
import os
import sys

from earthmapper_jax.cli import (convert, evaluate, generate, inpaint, inspect_cmd, outpaint, plot,
                                 prepare, reconstruct, train, translate, translate_area)
from earthmapper_jax.errors import EarthMapperError, print_error_line

# In `earthmapper --help` order.
SUBCOMMANDS = (prepare, inspect_cmd, convert, reconstruct, train, translate, translate_area,
               generate, inpaint, outpaint, evaluate, plot)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="earthmapper", description="EarthMapper-JAX: satellite <-> map translation."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv=None):
    """The `earthmapper` program (argv None: sys.argv, and an error ends the process's stderr)
    or an in-process call with `argv` (tests)."""
    as_program = argv is None
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except EarthMapperError as e:
        print_error_line(f"earthmapper {args.command}: error: {e}", last=as_program)
        return 1
    except FileNotFoundError as e:
        print_error_line(f"earthmapper {args.command}: error: no such file: {e.filename}",
                         last=as_program)
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
