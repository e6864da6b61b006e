"""What the sampling subcommands (translate, generate, inpaint, outpaint) share: one argument
group, coordinate parsing, per-tile coordinates, and the output machinery (cli/sampling_run.py).

    add_model_options(parser)       --checkpoint, --out, --batch-size, --seed, --overwrite and
                                    the sampler's options (--guidance, --top-k, --top-p,
                                    --temperature, --kpf-tau, --no-complexity, --bf16)
    add_tile_coords_options(parser) --coords, --coords-file, --data/--split (translate, inpaint)
    sampler_options(args) -> dict   keyword options of earthmapper_jax.sampling's samplers
    parse_coords(text, flag) -> (lat, lon)   InputError naming the flag
    parse_box(text, flag) -> (x0, y0, x1, y1) pixels

`--coords -33.9,151.2` (a negative latitude written as a separate word) is a value, not an
option: argparse before Python 3.14 takes any word starting with "-" that is not a plain negative
number for an option, so these parsers also treat comma-separated negative numbers as values.

Coordinates are refused outside Web Mercator's latitude range (±85.0511°, where map tiles
exist) and outside ±180° longitude, by the flag or file they came from.
"""

from __future__ import annotations

import argparse
import re

from earthmapper_jax.errors import InputError

WEB_MERCATOR_LAT = 85.0511
# Plain negative numbers, and comma-separated lists starting with one ("-33.9,151.2").
NEGATIVE_VALUES = re.compile(r"^-\d*\.?\d+([eE][-+]?\d+)?(,\s*[-+]?\d*\.?\d*([eE][-+]?\d+)?)*$")


def allow_negative_values(parser: argparse.ArgumentParser) -> None:
    # argparse (3.12, 3.13) decides "option or value" with this per-parser pattern; widening it
    # lets `--coords -33.9,151.2` through. No option of these parsers looks like a number.
    parser._negative_number_matcher = NEGATIVE_VALUES


def _floats(text: str, n: int, flag: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or any(v != v for v in vals):
        raise InputError(f"{flag} {text!r}: expected {what} ({n} comma-separated numbers)")
    return vals


def check_latlon(lat: float, lon: float, where: str) -> tuple[float, float]:
    if not -WEB_MERCATOR_LAT <= lat <= WEB_MERCATOR_LAT:
        raise InputError(f"{where}: latitude {lat} outside Web Mercator's range "
                         f"[-{WEB_MERCATOR_LAT}, {WEB_MERCATOR_LAT}]")
    if not -180.0 <= lon <= 180.0:
        raise InputError(f"{where}: longitude {lon} outside [-180, 180]")
    return float(lat), float(lon)


def parse_coords(text: str, flag: str = "--coords") -> tuple[float, float]:
    lat, lon = _floats(text, 2, flag, "LAT,LON in degrees")
    return check_latlon(lat, lon, f"{flag} {text}")


def parse_box(text: str, flag: str) -> tuple[int, int, int, int]:
    """x0,y0,x1,y1 in pixels of the input image (x right, y down; x1, y1 exclusive)."""
    vals = _floats(text, 4, flag, "x0,y0,x1,y1 in pixels")
    if any(v != int(v) for v in vals):
        raise InputError(f"{flag} {text!r}: expected whole pixels")
    x0, y0, x1, y1 = (int(v) for v in vals)
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"{flag} {text!r}: expected x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


def add_model_options(p: argparse.ArgumentParser) -> None:
    allow_negative_values(p)
    g = p.add_argument_group("model, output and sampling")
    g.add_argument("--checkpoint", required=True, metavar="DIR", help="EarthMapper model directory")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created when the first result is written)")
    g.add_argument("--overwrite", action="store_true",
                   help="redo outputs that exist (default: a rerun skips finished outputs)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--seed", type=int, default=0)
    add_sampling_options(g)


def add_sampling_options(g) -> None:
    """The token sampler's flags (a parser or an argument group). Unset flags leave the option
    to the caller's default: the sampler's (the paper's triple per direction, top-k 100,
    top-p 0.55, KPF τ 0.95), or for `evaluate` the model config's sampling section first."""
    g.add_argument("--guidance", default=None, metavar="W_GEO,W_COND,W_BOTH",
                   help="multi-term CFG weights (default: the paper's triple for the mode)")
    g.add_argument("--guidance-form", default=None, choices=("nested", "independent"),
                   help="nested: ControlVAR's chain, equal triples = plain CFG (the default); "
                        "independent: one summed term per condition (docs/guidance.md)")
    g.add_argument("--top-k", type=int, default=None, help="default 100")
    g.add_argument("--top-p", type=float, default=None, help="default 0.55")
    g.add_argument("--temperature", type=float, default=None, help="default 1.0")
    g.add_argument("--kpf-tau", type=float, default=None,
                   help="Key Point Force threshold τ (default 0.95; acts only with a condition "
                        "image; docs/guidance.md)")
    g.add_argument("--no-kpf", action="store_true", help="switch Key Point Force off")
    g.add_argument("--no-complexity", action="store_true", help="plain linear CFG ramp")
    g.add_argument("--bf16", action="store_true", help="sample in bfloat16")


def add_tile_coords_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "coordinates per tile",
        "first found: --coords for every tile; the --coords-file entry of the tile; its GeoTIFF "
        "tags; a file name ending _<lat>_<lon> (e.g. tile_40.71_-74.00.png); else none. With "
        "--data the records' own coordinates and tile ids are used.")
    g.add_argument("--coords", default=None, metavar="LAT,LON",
                   help="coordinates in degrees for every tile (--coords -33.9,151.2 works)")
    g.add_argument("--coords-file", default=None, metavar="CSV",
                   help="sidecar CSV/JSON as `earthmapper prepare` reads it (name,lat,lon)")
    g.add_argument("--data", default=None, metavar="DIR",
                   help="a prepared TFRecord directory to sample from instead of image files")
    g.add_argument("--split", default="test", help="split of --data (default: test)")


def sampler_options(args) -> dict:
    """The sampler keyword options the command line sets (unset flags are left out)."""
    if getattr(args, "batch_size", 1) < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = {k: v for k, v in (("top_k", args.top_k), ("top_p", args.top_p),
                                 ("temperature", args.temperature),
                                 ("guidance_form", args.guidance_form)) if v is not None}
    if args.guidance is not None:
        options["guidance"] = tuple(_floats(args.guidance, 3, "--guidance", "W_GEO,W_COND,W_BOTH"))
    if args.no_kpf:
        options["kpf_tau"] = None  # off
    elif args.kpf_tau is not None:
        options["kpf_tau"] = args.kpf_tau
    if args.no_complexity:
        options["complexity"] = False
    if args.bf16:
        options["dtype"] = "bfloat16"
    return options