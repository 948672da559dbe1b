"""Execute every notebook under examples/ top to bottom; any cell that raises fails the test.

The kernel runs in a separate process with examples/ as its working directory, so it
gets the repository root on PYTHONPATH: the notebooks import tvm_mcpruner (and
relay_passes, topi_sparse) whether or not the repository is pip-installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from nbclient.exceptions import CellExecutionError  # noqa: E402

from tests._resources import require_fashion_mnist  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# Notebooks that read Fashion-MNIST (Debian's dataset-fashion-mnist).
NEEDS_FASHION_MNIST = {"02_pruning_accuracy.ipynb"}


def test_examples_has_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {EXAMPLES}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.name in NEEDS_FASHION_MNIST:
        require_fashion_mnist()
    pythonpath = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), pythonpath])))

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # str(exc) holds the cell's source and traceback
        pytest.fail(f"{path.name}: a cell raised\n{exc}", pytrace=False)

    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
