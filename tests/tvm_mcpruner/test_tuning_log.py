"""Tuning logs: validation, target matching, provenance, and that a bad log is never touched."""

from __future__ import annotations

import json
import logging

import pytest
import tvm

from tvm_mcpruner import get_preset
from tvm_mcpruner.tuning_log import (
    PROVENANCE_FILE,
    RECORD_FILE,
    REPO_LOG_ROOT,
    WORKLOAD_FILE,
    TuningLogError,
    append_provenance,
    find_tuning_log,
    log_provenance,
    log_target,
    open_tuning_log,
    target_signature,
)

HOST = {"kind": "llvm", "mcpu": "znver5", "num-cores": 2, "keys": ["cpu"], "tag": ""}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a73", "mattr": ["+neon"], "num-cores": 4}


def workload_line(size: int) -> tuple[list[str], list]:
    """A real MetaSchedule workload (``b = a + 1`` over ``size`` floats) and its arguments' JSON."""
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    a = te.placeholder((size,), name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((size,), lambda i: a[i] + 1.0, name="b")])})
    return [str(x) for x in ms.database.Workload(mod).as_json()], [["TENSOR", "float32", [size]]] * 2


def write_log(directory, targets, workloads=1, extra_line=None):
    directory.mkdir(parents=True, exist_ok=True)
    lines = [workload_line(4 + i) for i in range(workloads)]
    (directory / WORKLOAD_FILE).write_text("".join(json.dumps(line) + "\n" for line, _ in lines))
    lines = [json.dumps([0, [[[], []], [1e-3], target, workload_line(4)[1]]]) for target in targets]
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
    ('[0, [[[], []], [NaN], {"kind": "llvm"}, []]]', "NaN is not a number JSON allows"),
    (json.dumps([0, [[[], []], [1e-3], ARM, [["TENSOR", "float32", [4]]] * 2]]), "one log folder holds one target"),
    # timed on another kernel (what two unlocked writers produced): its arguments give it away
    (json.dumps([0, [[[], []], [1e-3], HOST, [["TENSOR", "float32", [8]]] * 2]]), "are not those of workload 0"),
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


def run_line(emulated, target=HOST, runner="rpc", **extra):
    return {"date": "2026-01-01T00:00:00+00:00", "runner": runner, "tracker": "127.0.0.1:9190",
            "key": "k", "emulated": emulated, "host_cpu": "znver5", "tvm": "0.27.0.post1",
            "trials": 8, "target": target_signature(target), "records_before": 0, **extra}


def test_auto_lookup_skips_emulated_logs_and_keeps_unknown_ones(tmp_path, caplog):
    append_provenance(write_log(tmp_path / "a-emulated", [HOST]), run_line(True))
    assert find_tuning_log(HOST, roots=[tmp_path]) is None
    assert "a-emulated" in caplog.text and "emulated (qemu)" in caplog.text
    write_log(tmp_path / "b-no-provenance", [HOST])  # e.g. a log from before provenance.jsonl
    assert find_tuning_log(HOST, roots=[tmp_path]) == tmp_path / "b-no-provenance"
    assert log_provenance(tmp_path / "b-no-provenance").status == "unknown"
    # one emulated run taints the folder, whatever the others were
    mixed = write_log(tmp_path / "0-mixed", [HOST])
    append_provenance(mixed, run_line(False, runner="local"))
    append_provenance(mixed, run_line(True))
    assert log_provenance(mixed).status == "emulated"
    assert find_tuning_log(HOST, roots=[tmp_path]) == tmp_path / "b-no-provenance"
    real = write_log(tmp_path / "00-board", [HOST])
    append_provenance(real, run_line(False))
    assert log_provenance(real).status == "hardware"
    assert find_tuning_log(HOST, roots=[tmp_path]) == real


def test_provenance_is_appended_never_rewritten(tmp_path):
    log = write_log(tmp_path / "log", [HOST])
    append_provenance(log, run_line(None))
    first = (log / PROVENANCE_FILE).read_bytes()
    append_provenance(log, run_line(False, runner="local"))
    text = (log / PROVENANCE_FILE).read_bytes()
    assert text.startswith(first) and len(text.splitlines()) == 2
    assert [e["runner"] for e in log_provenance(log).entries] == ["rpc", "local"]
    assert log_provenance(log).status == "unknown"  # the first run did not know
    # a last line without its newline is not glued to the next one
    (log / PROVENANCE_FILE).write_bytes(text.rstrip(b"\n"))
    append_provenance(log, run_line(False))
    assert len(log_provenance(log).entries) == 3
    with pytest.raises(TuningLogError, match="one log folder holds one target"):
        append_provenance(log, run_line(False, target=ARM))


@pytest.mark.parametrize("bad, message", [
    ('{"runner": "local", "emulated": fal', "not a JSON line"),  # cut off mid-write
    ('["local"]', "not a JSON object"),
    (json.dumps({"runner": "board", "emulated": False}), "'runner' must be one of"),
    (json.dumps({"runner": "rpc", "emulated": "yes"}), "'emulated' must be true, false or null"),
    (json.dumps({"runner": "rpc"}), "'emulated' must be"),
    (json.dumps({"runner": "rpc", "emulated": False, "target": target_signature(ARM)}),
     "one log folder holds one target"),
])
def test_corrupt_provenance_is_refused_by_file_and_line_and_left_untouched(tmp_path, caplog, bad, message):
    log = write_log(tmp_path / "log", [HOST])
    (log / PROVENANCE_FILE).write_text(json.dumps(run_line(False)) + "\n" + bad + "\n")
    before = snapshot(log)
    for attempt in (lambda: open_tuning_log(log, HOST), lambda: log_provenance(log),
                    lambda: append_provenance(log, run_line(False))):
        with pytest.raises(TuningLogError, match=message) as err:
            attempt()
        assert f"{log / PROVENANCE_FILE}:2" in str(err.value)
    assert find_tuning_log(HOST, roots=[tmp_path]) is None and f"{PROVENANCE_FILE}:2" in caplog.text
    assert snapshot(log) == before


def test_provenance_target_must_agree_with_the_records(tmp_path):
    log = write_log(tmp_path / "log", [HOST])
    (log / PROVENANCE_FILE).write_text(json.dumps(run_line(False, target=ARM)) + "\n")
    with pytest.raises(TuningLogError, match="but the records"):
        open_tuning_log(log)


def test_shipped_log_has_provenance():
    provenance = log_provenance(REPO_LOG_ROOT / "znver5")
    assert provenance.status == "hardware"
    first = provenance.entries[0]  # the records of commit fd24889; later runs append lines
    assert first["commit"] == "fd24889"
    assert all(e["runner"] == "local" and e["host_cpu"] == "znver5" and e["emulated"] is False
               for e in provenance.entries)


def _empty_log(directory, emulated):
    """A log with no records yet (TVM loads it), for the host, measured as ``emulated`` says."""
    directory.mkdir()
    (directory / WORKLOAD_FILE).touch()
    (directory / RECORD_FILE).touch()
    append_provenance(directory, run_line(emulated, target=get_preset("host").tvm_target()))
    return directory


def test_compile_warns_about_an_emulated_log_given_by_path(tmp_path, caplog):
    import torch

    import tvm_mcpruner as mcp

    mod = mcp.from_torch(torch.nn.Conv2d(4, 8, 3), (torch.randn(1, 4, 8, 8),))
    log = _empty_log(tmp_path / "qemu", emulated=True)
    with caplog.at_level(logging.INFO, logger="tvm_mcpruner"):
        compiled = mcp.compile(mod, "host", tuning_log=log)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("emulated (qemu)" in r.getMessage() and str(log) in r.getMessage() for r in warnings)
    assert compiled.tuning_log_provenance.status == "emulated"
    assert "emulated (qemu)" in compiled.summary()
    caplog.clear()
    unknown = _empty_log(tmp_path / "board", emulated=None)
    compiled = mcp.compile(mod, "host", tuning_log=unknown)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "emulated" in r.getMessage()]
    assert "provenance: unknown" in compiled.summary()


@pytest.fixture
def parses(monkeypatch):
    """The folders whose records get parsed (tuning_log._check_log calls), in order."""
    from tvm_mcpruner.tuning_log import folders as tuning_log

    seen = []
    check = tuning_log._check_log

    def counting(directory):
        seen.append(directory.name)
        return check(directory)

    monkeypatch.setattr(tuning_log, "_check_log", counting)
    return seen


def test_lookup_parses_only_the_log_it_applies_and_only_once(tmp_path, parses):
    append_provenance(write_log(tmp_path / "a-arm", [ARM]), run_line(False, target=ARM))
    write_log(tmp_path / "b-old-arm", [ARM])  # no provenance: only its records say whose it is
    host = write_log(tmp_path / "c-host", [HOST, HOST])
    append_provenance(host, run_line(False))
    assert find_tuning_log(HOST, roots=[tmp_path]) == host
    assert parses == ["b-old-arm", "c-host"]  # a-arm told apart by its provenance
    # what compile does next: open the log it found, read its provenance
    assert log_target(host) == target_signature(HOST) and log_provenance(host).status == "hardware"
    assert find_tuning_log(HOST, roots=[tmp_path]) == host
    assert parses == ["b-old-arm", "c-host"]  # nothing parsed twice
    # a changed log is validated again: an appended good line, then a cut-off one
    with open(host / RECORD_FILE, "a") as f:
        f.write(json.dumps([1, [[[], []], [2e-3], HOST, workload_line(5)[1]]]) + "\n")
    (host / WORKLOAD_FILE).write_text("".join(json.dumps(workload_line(size)[0]) + "\n" for size in (4, 5)))
    assert log_target(host) == target_signature(HOST) and parses[-1] == "c-host" and len(parses) == 3
    with open(host / RECORD_FILE, "a") as f:
        f.write('[0, [[[], []], [1e-3], {"kind": "llv')
    before = snapshot(host)
    for _ in range(2):  # the error is remembered too, and the log is left as it is
        with pytest.raises(TuningLogError, match=f"{RECORD_FILE}:4: not a JSON line"):
            open_tuning_log(host, HOST)
    assert len(parses) == 4 and snapshot(host) == before
    assert find_tuning_log(HOST, roots=[tmp_path]) is None


def test_a_log_replaced_by_another_file_is_validated_again(tmp_path, parses):
    log = write_log(tmp_path / "log", [HOST])
    assert log_target(log) == target_signature(HOST)
    replacement = write_log(tmp_path / "other", [ARM])
    for name in (WORKLOAD_FILE, RECORD_FILE):  # same sizes, new inodes
        (replacement / name).replace(log / name)
    assert log_target(log) == target_signature(ARM) and parses == ["log", "log"]


def test_compile_says_plainly_when_no_log_matches_and_defaults_are_used(tmp_path, monkeypatch):
    import torch

    import tvm_mcpruner as mcp

    monkeypatch.chdir(tmp_path)  # no ./autotune_logs here; the repository's may or may not fit
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).eval()
    mod = mcp.from_torch(model, (torch.randn(1, 8, 6, 6),))
    cpu = str(get_preset("x86-avx2").tvm_target().attrs["mcpu"])
    compiled = mcp.compile(mod, "x86-avx2")  # no log is ever shipped for this preset's target
    assert compiled.tuning_log is None
    line = next(s for s in compiled.summary().splitlines() if "tuning log" in s)
    assert f"was measured for llvm {cpu}, " in line and "cores: default schedules" in line
    compiled = mcp.compile(mod, "x86-avx2", tuning_log=None)
    assert "not applied (tuning_log=None): default schedules" in compiled.summary()


_WRITER = """
import sys, time, tvm
from tvm import s_tir, te
from tvm.s_tir import meta_schedule as ms
from tvm_mcpruner.tuning_log import open_tuning_log
directory, size, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
a = te.placeholder((size,), name="a")
mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((size,), lambda i: a[i] + 1.0, name="b")])})
target = tvm.target.Target({"kind": "llvm", "mcpu": "znver5", "num-cores": 2})
database = open_tuning_log(directory, target, create=True)
while time.time() < start:  # both writers begin together
    time.sleep(0.001)
workload = database.commit_workload(mod)
sch = s_tir.Schedule(mod)
sch.get_sblock("b")
args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
for i in range(40):
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-3 * size], target, args))
"""


def test_two_processes_tuning_into_one_folder_keep_every_record_with_its_workload(tmp_path):
    import subprocess
    import sys
    import time

    start = str(time.time() + 8)  # past both interpreters' start-up (TVM's import)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(size), start])
               for size in (4, 8)]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    database = open_tuning_log(tmp_path)  # validates: every record's arguments fit its workload
    records = database.get_all_tuning_records()
    from tvm.s_tir import meta_schedule as ms

    sizes = sorted(int(ms.arg_info.ArgInfo.from_prim_func(r.workload.mod["main"])[0].shape[0]) for r in records)
    assert sizes == [4] * 40 + [8] * 40  # the record's workload ...
    assert all(float(r.run_secs[0]) == 1e-3 * int(r.args_info[0].shape[0]) for r in records)  # ... is the one timed
    assert len((tmp_path / WORKLOAD_FILE).read_text().splitlines()) == 2


def test_a_folder_with_a_non_utf8_byte_is_skipped_by_auto_and_named_by_path(tmp_path, caplog):
    broken = write_log(tmp_path / "a-broken", [HOST])
    append_provenance(broken, run_line(False))
    with open(broken / PROVENANCE_FILE, "ab") as f:
        f.write(b'{"runner": "local\xff"}\n')
    good = write_log(tmp_path / "b-good", [HOST])
    with caplog.at_level(logging.WARNING, logger="tvm_mcpruner"):
        assert find_tuning_log(HOST, roots=[tmp_path]) == good
    assert f"{broken}" in caplog.text
    with pytest.raises(TuningLogError, match=rf"{PROVENANCE_FILE}:2: not a JSON line .'utf-8' codec"):
        open_tuning_log(broken)


def test_the_default_log_folder_is_under_the_current_folder_not_the_package(tmp_path, monkeypatch):
    from tvm_mcpruner.tuning_log import default_log_dir

    monkeypatch.chdir(tmp_path)
    assert default_log_dir(get_preset("hikey970-cpu")) == tmp_path / "autotune_logs" / "hikey970-cpu"
