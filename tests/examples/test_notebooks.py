"""The notebooks under examples/: they run top to bottom, and their committed outputs are current.

Running them goes through ``examples/run_notebooks.py`` (the script that writes the
committed outputs, in its ``--check`` path: execute in memory, write nothing), so CI
and the script are one code path. The cheap check reads the committed files only:
every code cell ran once in order without error, there is a PNG plot, the outputs were
computed from the code cells as they are (a hash the script records), and the file is small.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
from nbclient.exceptions import CellExecutionError

from tests._resources import require_fashion_mnist

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# Notebooks that read Fashion-MNIST (Debian's dataset-fashion-mnist).
NEEDS_FASHION_MNIST = {"02_pruning_accuracy.ipynb"}


def _load_script():
    """examples/run_notebooks.py as a module (examples/ is no package)."""
    spec = importlib.util.spec_from_file_location("run_notebooks", EXAMPLES / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_notebooks = _load_script()


def test_examples_has_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {EXAMPLES}"
    assert run_notebooks.notebooks() == NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_carries_current_outputs(path: Path) -> None:
    problems = run_notebooks.committed_problems(path)
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    if path.name in NEEDS_FASHION_MNIST:
        require_fashion_mnist()
    before = path.read_bytes()
    try:
        nb = run_notebooks.execute(path)
    except CellExecutionError as exc:  # str(exc) holds the cell's source and traceback
        pytest.fail(f"{path.name}: a cell raised\n{exc}", pytrace=False)
    assert path.read_bytes() == before, "the check path must not write the notebook"
    errors = [out.get("ename") for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    assert nb.metadata["mcpruner"]["source_sha256"] == run_notebooks.source_hash(nb)


def test_clean_keeps_a_progress_bar_final_state_and_drops_timestamps() -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stderr", text="  0%|   | 0/10\r 50%|#  | 5/10\r100%|###| 10/10\ndone\n"),
    ])])
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    run_notebooks.clean(nb)
    assert nb.cells[0].outputs[0]["text"] == "100%|###| 10/10\ndone\n"
    assert "execution" not in nb.cells[0].metadata
    assert nb.metadata["mcpruner"]["source_sha256"] == run_notebooks.source_hash(nb)
