"""Shared pytest configuration for the tvm-mcpruner test suite."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: takes more than ~20 s (long, but still run in CI; deselect locally with -m 'not slow')",
    )
