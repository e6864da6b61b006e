"""`earthmapper plot WORKDIR`: training curves from WORKDIR/metrics.jsonl to a PNG."""

import math
import pathlib

from earthmapper_jax.errors import InputError
from earthmapper_jax.io import files

# Panels: title -> metric keys drawn in it (those present in the run).
PANELS = (
    ("loss", ("loss", "eval/loss")),
    ("cross-entropy per modality", ("ce_sat", "ce_map", "eval/ce_sat", "eval/ce_map")),
    ("accuracy per modality", ("acc_sat", "acc_map", "eval/acc_sat", "eval/acc_map",
                               "accuracy", "eval/accuracy")),
    ("reconstruction", ("rec_l2", "vq_loss", "psnr", "eval/psnr")),
    ("learning rate", ("lr",)),
    ("gradient norm", ("grad_norm",)),
    ("throughput (images/s)", ("perf/images_per_s",)),
)


def _ema(values, alpha=0.1):
    out, m = [], None
    for v in values:
        m = v if m is None else (1 - alpha) * m + alpha * v
        out.append(m)
    return out


def series_of(records) -> dict:
    """{metric: (steps, values)} of the finite numbers in metrics.jsonl records."""
    series = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(k, ([], []))
                series[k][0].append(r["step"])
                series[k][1].append(v)
    return series


def panels_of(series, keys=None) -> list:
    """[(title, metric keys)] to draw: one panel per key in `keys`, else PANELS and the
    per-scale cross-entropies; panels with nothing recorded are left out."""
    if keys:
        panels = [(k, (k,)) for k in keys]
    else:
        panels = [(t, [k for k in ks if k in series]) for t, ks in PANELS]
        panels += [("cross-entropy per scale",
                    sorted((k for k in series if k.startswith("ce_scale_")),
                           key=lambda k: int(k.rsplit("_", 1)[1])))]
    return [(t, ks) for t, ks in panels if any(k in series for k in ks)]


def draw(axes: list, panels, series) -> None:
    """One panel per matplotlib axis (spare axes hidden): sparse series as points, dense
    ones raw and smoothed."""
    for ax, (title, ks) in zip(axes, panels):
        for k in ks:
            if k not in series:
                continue
            x, y = series[k]
            if k.startswith("eval/") or len(x) < 20:
                ax.plot(x, y, marker="o", ms=3, label=k)
            else:
                ax.plot(x, y, alpha=0.25, lw=0.8)
                ax.plot(x, _ema(y), label=f"{k} (EMA)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.axis("off")


def register(subparsers):
    p = subparsers.add_parser("plot", help="draw training curves of a workdir to PNG",
                              description=__doc__)
    p.add_argument("workdir", metavar="WORKDIR")
    p.add_argument("--out", default=None, help="PNG path (default WORKDIR/plots/curves.png)")
    p.add_argument("--metrics", default="", help="comma-separated metric names, one panel each")
    p.set_defaults(func=run)


def run(args):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from earthmapper_jax.train.metrics import read_jsonl

    path = pathlib.Path(args.workdir) / "metrics.jsonl"
    if not path.exists():
        raise InputError(f"{args.workdir}: no metrics.jsonl (is it a training workdir?)")
    series = series_of(read_jsonl(path))
    panels = panels_of(series, [k for k in args.metrics.split(",") if k] or None)
    if not panels:
        raise InputError(f"{path}: none of the metrics to plot are recorded")
    ncol = 2 if len(panels) > 1 else 1
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 3.2 * nrow), squeeze=False)
    draw(list(axes.flat), panels, series)
    fig.suptitle(str(args.workdir), fontsize=9)
    fig.tight_layout()
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.workdir) / "plots" / "curves.png"
    with files.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
