"""rank_tuned_records / RankedTuningView: the default stays unless a schedule timed as often
beats its median by the margin; records of earlier schedule versions are left out."""

from __future__ import annotations

import numpy as np
import pytest
from tvm.s_tir import meta_schedule as ms

import topi_sparse
from tests._tuning import HOST, OTHER_KNOBS, THIRD_KNOBS, kernel_workload, log_runs, traced, without_knobs
from tvm_mcpruner.tuning_log import RankedTuningView, rank_tuned_records, ranking


@pytest.mark.parametrize(
    "default_runs, tuned_runs, tuned_wins",
    [
        ([1.0], [0.90], True),              # 10% faster: beyond the margin
        ([1.0], [0.99], False),             # 1% faster: a tie, the default stays
        ([1.0, 1.0], [0.5, 1.1, 1.1], False),  # one lucky run; its median is slower
        ([1.2, 1.0, 1.0], [0.95, 0.9, 0.92], True),  # the default's slow outlier does not count either
        ([1.0, 1.0, 1.0], [0.5], False),    # timed once (by the search), never confirmed: no rival
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.9, 0.9, 0.9], True),  # CONFIRMED_RUNS runs are enough
    ],
)
def test_the_default_stays_unless_a_schedule_beats_its_median_by_the_margin(default_runs, tuned_runs, tuned_wins):
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    tuned = traced(workload, OTHER_KNOBS)
    assert str(default) != str(tuned)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, tuned, tuned_runs)
    log_runs(database, workload, default, default_runs)

    ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(tuned), str(default)][:: 1 if tuned_wins else -1]
    expected_ms = np.median(tuned_runs) if tuned_wins else np.median(default_runs)
    assert float(ranked[0].run_secs[0]) * 1e3 == pytest.approx(expected_ms, rel=1e-9)
    # without the family (no default known) it is the plain order of the medians
    plain = rank_tuned_records(database, database.commit_workload(workload))
    assert str(plain[0].trace) == str(min([(np.median(tuned_runs), str(tuned)), (np.median(default_runs), str(default))])[1])


def test_the_ranked_view_applies_a_log_without_writing_to_it():
    workload, _ = kernel_workload()
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, traced(workload, OTHER_KNOBS), [1.0, 3.0])
    view = RankedTuningView(database, HOST.family)
    (top,) = view.get_top_k(view.commit_workload(workload), 5)
    assert float(top.run_secs[0]) * 1e3 == pytest.approx(2.0)  # one record, the median of both runs
    with pytest.raises(TypeError, match="never writes"):
        view.commit_tuning_record(top)
    assert len(view) == len(database) == 2


def test_an_unconfirmed_schedule_does_not_hide_a_confirmed_one():
    # The search's single runs read fast; the confirmed candidate is the one compared.
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    confirmed, once = traced(workload, OTHER_KNOBS), traced(workload, THIRD_KNOBS)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, default, [1.0, 1.0, 1.0])
    log_runs(database, workload, confirmed, [0.8, 0.9, 0.9])
    log_runs(database, workload, once, [0.5])
    ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(confirmed), str(once), str(default)]
    from tvm_mcpruner.tuning import CONFIRM_ROUNDS

    assert ranking.CONFIRMED_RUNS == 1 + CONFIRM_ROUNDS  # what the tuner gives each


def test_records_of_an_earlier_schedule_version_are_left_out(caplog, monkeypatch):
    monkeypatch.setattr(ranking, "_stale_noted", set())  # said once per opened log
    # A trace logged by earlier code replays its old loop structure: ranked out, kept in the log.
    workload, _ = kernel_workload()
    default = topi_sparse.default_schedule_trace(workload, HOST.family)
    assert topi_sparse.trace_schedule_id(default) == topi_sparse.cpu.SCHEDULE_ID
    old = without_knobs(traced(workload, OTHER_KNOBS))
    assert topi_sparse.trace_schedule_id(old) is None and not topi_sparse.is_current_trace(old)
    database = ms.database.MemoryDatabase()
    log_runs(database, workload, old, [0.1])  # far faster, but from another schedule version
    log_runs(database, workload, default, [1.0])
    with caplog.at_level("INFO", logger="tvm_mcpruner"):
        ranked = rank_tuned_records(database, database.commit_workload(workload), HOST.family)
    assert [str(r.trace) for r in ranked] == [str(default)]
    assert len(database.get_all_tuning_records()) == 2 and "earlier version of its schedule" in caplog.text
