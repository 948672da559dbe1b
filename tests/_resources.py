"""Optional resources some tests need, and what to do when one is absent.

Outside CI such a test skips, saying what is missing and how to set it up, so README's
test command passes on a fresh machine on its own. With ``CI=true`` (exported by
``.ci/run``, which installs them) it fails instead: CI must never pass by skipping them.

- the aarch64 emulation (qemu + sysroot + wheels): ``.ci/setup_arm.sh``;
- Fashion-MNIST from Debian's ``dataset-fashion-mnist``: ``.ci/setup_data.sh``;
- ``llvm-mca-19`` (Debian ``llvm-19``) for the kernels' performance model: ``.ci/setup_arm.sh``.
"""

from __future__ import annotations

import os

import pytest

from tvm_mcpruner import arm_emulation
from tvm_mcpruner.data import FASHION_MNIST_DIR

__all__ = ["require_arm_emulation", "require_fashion_mnist", "require_llvm_mca", "running_in_ci"]


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _missing(problem: str | None) -> None:
    if problem is None:
        return
    if running_in_ci():
        pytest.fail(f"CI=true, so this test may not skip: {problem}", pytrace=False)
    pytest.skip(problem)


def require_arm_emulation() -> None:
    """Return when the emulation is ready; else skip (locally) or fail (``CI=true``)."""
    _missing(arm_emulation.status())


def require_fashion_mnist() -> None:
    """Return when Fashion-MNIST is installed; else skip (locally) or fail (``CI=true``)."""
    if not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        _missing(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
                 "(sudo bash .ci/setup_data.sh, or apt-get install dataset-fashion-mnist)")


def require_llvm_mca() -> None:
    """Return when the performance model's llvm-mca is on PATH; else skip (locally) or fail (``CI=true``)."""
    from tests.benchmarks import load_benchmark  # the model names its binary and set-up step

    model = load_benchmark("perf_model")
    if model.llvm_mca_path() is None:
        _missing(f"{model.LLVM_MCA} is not installed ({model.LLVM_MCA_SETUP})")
