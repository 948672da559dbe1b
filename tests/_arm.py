"""Shared by the ``arm`` tests: what to do when the aarch64 emulation is not set up.

Outside CI such a test skips, saying what is missing and how to set it up. With
``CI=true`` (exported by ``.ci/run``) it fails instead: CI must never pass by skipping
the ARM checks silently.
"""

from __future__ import annotations

import os

import pytest

from tvm_mcpruner import arm_emulation

__all__ = ["require_arm_emulation", "running_in_ci"]


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_arm_emulation() -> None:
    """Return when the emulation is ready; else skip (locally) or fail (``CI=true``)."""
    problem = arm_emulation.status()
    if problem is None:
        return
    if running_in_ci():
        pytest.fail(f"CI=true, so the arm tests may not skip: {problem}", pytrace=False)
    pytest.skip(problem)
