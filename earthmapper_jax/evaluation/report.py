"""What an evaluation writes besides its records: metrics.json, table.md (Table I's columns with
the paper's EarthMapper rows beside) and the sample grid.

    write_table(path, metrics)   Table I's columns: map->sat FID, KID (x100), precision, recall;
                                 sat->map SSIM, PSNR, RMSE, LPIPS; a column's value is "-" when
                                 its direction (or LPIPS) was not evaluated
    PAPER_ROWS                   EarthMapper's rows of the paper's Tables I (New York) and II
                                 (CNSatMap), test splits (shared/reference/earthmapper_paper.md §4)
"""

from __future__ import annotations

from earthmapper_jax.io.files import write_text

# (column, direction, metric key in metrics.json, format, arrow)
COLUMNS = (
    ("FID", "map2sat", "fid", "{:.2f}", "↓"),
    ("KID (×100)", "map2sat", "kid_scaled", "{:.2f}", "↓"),
    ("Precision", "map2sat", "precision", "{:.4f}", "↑"),
    ("Recall", "map2sat", "recall", "{:.4f}", "↑"),
    ("SSIM", "sat2map", "ssim", "{:.4f}", "↑"),
    ("PSNR (dB)", "sat2map", "psnr", "{:.2f}", "↑"),
    ("RMSE", "sat2map", "rmse", "{:.4f}", "↓"),
    ("LPIPS", "sat2map", "lpips", "{:.4f}", "↓"),
)

PAPER_ROWS = {
    "EarthMapper (paper, New York, Table I)": {
        "map2sat": {"fid": 36.54, "kid_scaled": 0.99, "precision": 0.6182, "recall": 0.4890},
        "sat2map": {"ssim": 0.6534, "psnr": 25.04, "rmse": 0.0611, "lpips": 0.2819}},
    "EarthMapper (paper, CNSatMap, Table II)": {
        "map2sat": {"fid": 29.89, "kid_scaled": 2.06, "precision": 0.4294, "recall": 0.3954},
        "sat2map": {"ssim": 0.7300, "psnr": 26.88, "rmse": 0.0510, "lpips": 0.3103}},
}


def _cells(row: dict) -> list[str]:
    out = []
    for _, direction, key, fmt, _ in COLUMNS:
        v = (row.get(direction) or {}).get(key)
        out.append("-" if v is None else fmt.format(v))
    return out


def _split_cell(row: dict) -> str:
    parts = [f"{d}: {row[d]['split']} ({row[d]['n']})" for d in ("map2sat", "sat2map") if row.get(d)]
    return ", ".join(parts)


def table(metrics: dict) -> str:
    head = ["Method", "split (tiles)"] + [f"{c}{a}" for c, _, _, _, a in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| " + " | ".join([metrics["method"], _split_cell(metrics)] + _cells(metrics)) + " |")
    for name, row in PAPER_ROWS.items():
        lines.append("| " + " | ".join([name, "test"] + _cells(row)) + " |")
    notes = [
        "",
        "map→sat (FID, KID, precision, recall) scores the generated satellite tiles against the "
        "real ones of the split; sat→map (SSIM, PSNR, RMSE, LPIPS) scores each generated map "
        "against its own real map. KID is printed ×100 (the paper's scale; raw values in "
        "metrics.json). "
        f"Features: {metrics.get('features', {}).get('inception', {}).get('file', '-')}; "
        f"LPIPS: {metrics.get('features', {}).get('lpips', {}).get('net', '-')}. "
        "See docs/evaluation.md for every choice.",
        "",
        "The paper's rows are on its own test splits (256², trained models); they are references, "
        "not comparable to a run on other data.",
    ]
    return "\n".join([f"# Evaluation: {metrics['method']}", ""] + lines + notes) + "\n"


def write_table(path, metrics: dict) -> None:
    write_text(path, table(metrics))
