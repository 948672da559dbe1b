"""Tuning logs: validation, target matching, and that a bad log is never touched."""

from __future__ import annotations

import json

import pytest

from tvm_mcpruner import get_preset
from tvm_mcpruner.tuning_log import (
    RECORD_FILE,
    WORKLOAD_FILE,
    TuningLogError,
    find_tuning_log,
    log_target,
    open_tuning_log,
    target_signature,
)

HOST = {"kind": "llvm", "mcpu": "znver5", "num-cores": 2, "keys": ["cpu"], "tag": ""}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a73", "mattr": ["+neon"], "num-cores": 4}


def write_log(directory, targets, workloads=1, extra_line=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WORKLOAD_FILE).write_text("".join(f'["{i}", "{{}}"]\n' for i in range(workloads)))
    lines = [json.dumps([0, [[[], []], [1e-3], target, []]]) for target in targets]
    if extra_line is not None:
        lines.append(extra_line)
    (directory / RECORD_FILE).write_text("\n".join(lines) + "\n")
    return directory


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_signature_ignores_keys_and_tags():
    assert target_signature(HOST) == {"kind": "llvm", "mcpu": "znver5", "num-cores": 2}
    assert target_signature(get_preset("hikey970-cpu").tvm_target()) == target_signature(ARM)


@pytest.mark.parametrize("bad, message", [
    ('[0, [[[], []], [1e-3], {"kind": "llvm"}', "not a JSON line"),  # cut off mid-write
    ('{"trace": 1}', "not a MetaSchedule tuning record"),
    (json.dumps([5, [[[], []], [1e-3], HOST, []]]), "refers to workload 5"),
    (json.dumps([0, [[[], []], [1e-3], ARM, []]]), "one log folder holds one target"),
])
def test_malformed_log_is_refused_by_line_and_left_untouched(tmp_path, bad, message):
    log = write_log(tmp_path / "log", [HOST], extra_line=bad)
    before = snapshot(log)
    with pytest.raises(TuningLogError, match=message) as err:
        open_tuning_log(log, create=True)
    assert f"{RECORD_FILE}:2" in str(err.value)
    assert snapshot(log) == before


def test_foreign_log_is_refused(tmp_path):
    log = write_log(tmp_path / "arm", [ARM])
    before = snapshot(log)
    with pytest.raises(TuningLogError, match="measured for"):
        open_tuning_log(log, HOST)
    assert snapshot(log) == before


def test_missing_log_is_an_error_unless_created(tmp_path):
    with pytest.raises(TuningLogError, match="no tuning log"):
        open_tuning_log(tmp_path / "none")
    open_tuning_log(tmp_path / "new", HOST, create=True)
    assert log_target(tmp_path / "new") is None


def test_find_picks_the_folder_of_the_target_and_skips_broken_ones(tmp_path, caplog):
    write_log(tmp_path / "a-arm", [ARM])
    write_log(tmp_path / "b-broken", [HOST], extra_line="{")
    write_log(tmp_path / "c-host", [HOST, HOST])
    assert find_tuning_log(HOST, roots=[tmp_path]) == tmp_path / "c-host"
    assert find_tuning_log(ARM, roots=[tmp_path]) == tmp_path / "a-arm"
    assert find_tuning_log({"kind": "llvm", "mcpu": "skylake"}, roots=[tmp_path]) is None
    assert "b-broken" in caplog.text


def test_compile_refuses_a_foreign_log(tmp_path):
    import torch

    import tvm_mcpruner as mcp

    log = write_log(tmp_path / "arm", [ARM])
    mod = mcp.from_torch(torch.nn.Conv2d(4, 8, 3), (torch.randn(1, 4, 8, 8),))
    with pytest.raises(TuningLogError, match="measured for"):
        mcp.compile(mod, "host", tuning_log=log)
