"""notebooks/sampling.ipynb: committed without outputs, and run top to bottom (nbclient, an
ipykernel kernel) against the tiny model of the `tiny_em_model` fixture; any cell error fails.

The first code cell holds the parameters; it is replaced by the fixture's paths (2 tiles, batch
2, so the timing cell reuses the translate cell's compiled sampler). The kernel inherits this
process's environment, with the compilation cache in a temporary folder.
"""

import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

from tests.tiny_em_model import FAST_COMPILE

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "sampling.ipynb"


def test_committed_notebook_has_no_outputs():
    doc = json.loads(NOTEBOOK.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert code and code[0]["source"][0].startswith("# Parameters")
    for c in code:
        assert c.get("outputs") == [] and c.get("execution_count") is None, "".join(c["source"])[:80]


def parameters(fx) -> str:
    return "\n".join([
        "# Parameters",
        f"MODEL_DIR = {str(fx['model'])!r}",
        f"DATA_DIR = {str(fx['data'])!r}",
        "SPLIT = 'val'",
        "SEED = 0",
        "N_TILES = 2",
        "BATCH = 2",
        "COORDS = [(40.7128, -74.0060), (-33.8688, 151.2093)]",
    ])


def run_notebook(fx, cache_dir, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = parameters(fx)
    monkeypatch.setenv("EARTHMAPPER_CACHE", str(cache_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # One CPU device in the kernel, and XLA's faster unoptimised CPU compile (as the demo's
    # --smoke): compiling its samplers is most of what the notebook costs here.
    monkeypatch.setenv("XLA_FLAGS", FAST_COMPILE)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def test_notebook_runs_top_to_bottom(tiny_em_model, tmp_path, monkeypatch):
    nb = run_notebook(tiny_em_model, tmp_path / "cache", monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 4  # translate, generate, in/out-paint, guidance sweep
    text = "".join(o.get("text", "") for o in outputs)
    assert "translate sat2map first call" in text and "tiles/s" in text
    assert os.listdir(tmp_path / "cache"), "the compilation cache stayed empty"
