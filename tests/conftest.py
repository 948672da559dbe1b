"""Shared pytest configuration for the tvm-mcpruner test suite."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: takes more than ~20 s (long, but still run in CI; deselect locally with -m 'not slow')",
    )
    config.addinivalue_line(
        "markers",
        "notebook: executes a notebook under examples/ (run in CI)",
    )
    config.addinivalue_line(
        "markers",
        "arm: builds for aarch64 + NEON and runs under qemu-aarch64 (run in CI; needs "
        "the emulation set up by .ci/setup_arm.sh)",
    )
