"""`earthmapper outpaint`: keep a box of each tile and regenerate everything around it.

    earthmapper outpaint tile.png --modality map --keep 8,8,24,24 --checkpoint MODEL --out edits/

--keep x0,y0,x1,y1: the region kept, in pixels of the input image (x to the right, y down, x1
and y1 exclusive; inside the image). Everything else is as `earthmapper inpaint` (cli/inpaint.py):
--condition, coordinates per tile, --data; outputs OUT/<name>_<modality>_outpaint.png.
"""

from __future__ import annotations

from earthmapper_jax.cli import inpaint as inpaint_cmd
from earthmapper_jax.cli import sampling_args


def register(subparsers):
    p = subparsers.add_parser("outpaint", help="keep a box of tiles and regenerate the border",
                              description=__doc__.split("\n\n")[0])
    inpaint_cmd.add_painting_args(p)
    p.add_argument("--keep", required=True, metavar="X0,Y0,X1,Y1", help="region kept, in input pixels")
    p.set_defaults(func=run)


def run(args):
    from earthmapper_jax.sampling.inpaint_masks import box_mask

    keep = sampling_args.parse_box(args.keep, "--keep")

    def mask_for(shape, where, size):
        return box_mask(size, inpaint_cmd.box_region(keep, shape, "--keep", where), outpaint=True)

    return inpaint_cmd.run_painting(args, "outpaint", mask_for)
