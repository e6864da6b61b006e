"""The catalogue of docs/troubleshooting.md: every user-facing error the code raises, read from
the source, so the page cannot drift from the messages (tests/test_new_user.py compares them).

    python -m tests.troubleshooting_doc          # rewrites the generated part of the page

A message is the first argument of `raise InputError(...)` (and CheckpointError, DataError,
EarthMapperError and their subclasses) with its f-string fields shown as `{expression}`.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "troubleshooting.md"
SOURCES = ("earthmapper_jax", "data_prep")
ERRORS = {"EarthMapperError": "EarthMapperError", "InputError": "InputError",
          "CheckpointError": "CheckpointError", "DataError": "DataError",
          "SplitError": "InputError", "SidecarError": "DataError",
          "NonFiniteLossError": "EarthMapperError"}
BEGIN = "<!-- BEGIN GENERATED: python -m tests.troubleshooting_doc -->"
END = "<!-- END GENERATED -->"


def _template(node) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else _field(v) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _template(node.left) + _template(node.right)
    return "{" + ast.unparse(node) + "}"


def _field(v: ast.FormattedValue) -> str:
    conv = {-1: "", 114: "!r", 115: "!s", 97: "!a"}[v.conversion]
    return "{" + ast.unparse(v.value) + conv + "}"


def raise_sites():
    """[(error type, message template, "path:function")] of every user-facing raise, in file order."""
    out = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text())
            rel = path.relative_to(ROOT).as_posix()
            for fn in [tree, *[n for n in ast.walk(tree)
                                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]]:
                name = getattr(fn, "name", "<module>")
                body = fn.body if fn is not tree else [n for n in tree.body if not isinstance(
                    n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
                for node in (n for stmt in body for n in _walk_own(stmt)):
                    exc = node.exc if isinstance(node, ast.Raise) else None
                    if (isinstance(exc, ast.Call) and isinstance(exc.func, ast.Name)
                            and exc.func.id in ERRORS and exc.args):
                        out.append((exc.func.id, _template(exc.args[0]), f"{rel}:{name}"))
    return out


def _walk_own(node):
    """ast.walk that does not enter nested functions (they are visited on their own)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk_own(child)


def catalogue() -> str:
    lines, current = [], None
    for kind, msg, where in raise_sites():
        path = where.split(":")[0]
        if path != current:
            lines += ["", f"### `{path}`", ""]
            current = path
        lines.append(f"- {kind}: `` {' '.join(msg.split())} `` ({where.split(':')[1]})")
    return "\n".join(lines).strip() + "\n"


def generated_part(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"


def write() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n\n{catalogue()}\n{END}{tail}")


if __name__ == "__main__":
    write()
    sys.exit(0)
