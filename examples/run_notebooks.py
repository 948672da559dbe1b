"""Execute the notebooks in examples/ top to bottom and save them with their outputs.

    python examples/run_notebooks.py                 # all notebooks, outputs written in place
    python examples/run_notebooks.py 01_prune_compile_run.ipynb
    python examples/run_notebooks.py --check         # execute in memory, write nothing (what CI runs)

The kernel runs with examples/ as its working directory and the repository root on
PYTHONPATH, so the notebooks import tvm_mcpruner whether or not it is pip-installed.
A notebook is written only when every cell ran without error. What is saved is kept
small and stable: plots are PNG, no per-cell execution timestamps are recorded, progress
bars keep only their final state, and ``metadata.mcpruner.source_sha256`` holds a hash
of the code cells as executed, so a test can tell that the committed outputs come from
the committed code without running it (:func:`committed_problems`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

EXAMPLES = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES.parent
CELL_TIMEOUT_S = 600
# What a committed notebook may weigh: outputs are text and PNG plots, not data.
MAX_NOTEBOOK_BYTES = 300_000
# Run before the first cell and not saved: PNG plots (the repository page renders them; SVG
# would weigh more) at a modest resolution.
SETUP_CODE = ("%config InlineBackend.figure_formats = ['png']\n"
              "%config InlineBackend.rc = {'figure.dpi': 80}")


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks under examples/, or those named (file names or paths)."""
    if not names:
        return sorted(EXAMPLES.glob("*.ipynb"))
    return [Path(name) if Path(name).exists() else EXAMPLES / name for name in names]


def source_hash(nb: nbformat.NotebookNode) -> str:
    """SHA-256 over the code cells' sources, in order: what the outputs were computed from."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _repository_on_pythonpath() -> Iterator[None]:
    """The kernel inherits this process's environment: put the repository root first on its path."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


class _Client(NotebookClient):
    """A NotebookClient that runs :data:`SETUP_CODE` in the kernel before the first cell."""

    async def async_start_new_kernel_client(self) -> Any:
        client = await super().async_start_new_kernel_client()
        reply = await self.async_wait_for_reply(client.execute(SETUP_CODE, silent=True, store_history=False))
        if reply is None or reply["content"].get("status") != "ok":
            raise RuntimeError(f"notebook set-up code failed: {reply}")
        return client


def execute(path: Path) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom in a fresh python3 kernel; the executed, cleaned notebook.

    Raises :class:`nbclient.exceptions.CellExecutionError` (its text holds the cell and the
    traceback) when a cell raises.
    """
    nb = nbformat.read(path, as_version=4)
    client = _Client(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                     resources={"metadata": {"path": str(EXAMPLES)}})
    with _repository_on_pythonpath():
        client.execute()
    clean(nb)
    return nb


def _final_state(text: str) -> str:
    """Stream text as a terminal shows it: of each line rewritten with carriage returns, the last."""
    return "\n".join(([part for part in line.split("\r") if part] or [""])[-1] for line in text.split("\n"))


def clean(nb: nbformat.NotebookNode) -> None:
    """Drop what changes on every run without saying anything, and record the source hash."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # per-cell timestamps
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = _final_state(output["text"])
    nb.metadata.pop("widgets", None)
    nb.metadata["mcpruner"] = {"source_sha256": source_hash(nb)}


def committed_problems(path: Path) -> list[str]:
    """What is wrong with a committed notebook's outputs, checked without running it.

    Every code cell ran once, in order, without an error output; there is at least one PNG
    plot; the outputs were computed from the code cells as they are now (source hash); the
    file is small.
    """
    nb = nbformat.read(path, as_version=4)
    problems = []
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts {counts}: not run top to bottom once (run {Path(__file__).name})")
    errors = [out.get("ename") for cell in code for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        problems.append(f"error outputs {errors}")
    if not any("image/png" in out.get("data", {}) for cell in code for out in cell.get("outputs", [])):
        problems.append("no PNG plot among the outputs")
    recorded = nb.metadata.get("mcpruner", {}).get("source_sha256")
    if recorded != source_hash(nb):
        problems.append("the code cells changed since the outputs were computed: run "
                        f"python examples/{Path(__file__).name} {path.name}")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        problems.append(f"{size} bytes, more than {MAX_NOTEBOOK_BYTES}: plots too large or data printed")
    return problems


def _warn_if_busy() -> None:
    """Say so when other work keeps the CPUs busy: the notebooks' timings would show that load.

    An OpenMP pool that spin-waits (torch's) slows down by orders of magnitude when its
    threads share cores with other processes, so committed outputs should come from an
    idle machine.
    """
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: other work is "
              "running, so the timings in the outputs will be distorted (torch's most)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  python examples/run_notebooks.py --check")
    parser.add_argument("notebooks", nargs="*", help="notebook file names (default: every one in examples/)")
    parser.add_argument("--check", action="store_true", help="execute in memory and write nothing")
    args = parser.parse_args(argv)
    _warn_if_busy()
    failed = []
    for path in notebooks(args.notebooks):
        start = time.perf_counter()
        try:
            nb = execute(path)
        except CellExecutionError as exc:
            print(f"{path.name}: a cell raised\n{exc}", file=sys.stderr)
            failed.append(path.name)
            continue
        took = time.perf_counter() - start
        if args.check:
            print(f"{path.name}: ran in {took:.0f} s")
            continue
        nbformat.write(nb, path)
        print(f"{path.name}: ran in {took:.0f} s, wrote {path.stat().st_size / 1e3:.0f} KB")
        problems = committed_problems(path)
        if problems:
            print(f"{path.name}: " + "; ".join(problems), file=sys.stderr)
            failed.append(path.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
