"""Knob records shared by every family: how a schedule writes its knobs into the trace."""

from __future__ import annotations

__all__ = ["KNOBS_ANNOTATION", "parse_knobs_annotation", "trace_schedule_id"]

# Block annotation in which a schedule records its knobs (``schedule=<id>;name=value;...``);
# sampled sizes go to ``<it>.<name>`` annotations, as the decisions they took.
KNOBS_ANNOTATION = "mcpruner.knobs"


def parse_knobs_annotation(value: str) -> dict[str, str]:
    """``"a=1;b=x"`` -> ``{"a": "1", "b": "x"}``."""
    return dict(item.split("=", 1) for item in value.split(";"))


def trace_schedule_id(trace) -> str | None:
    """The schedule id a trace of our kernel was made with (None: made before ids existed)."""
    for inst in trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]) == KNOBS_ANNOTATION:
            return parse_knobs_annotation(str(inst.inputs[1])).get("schedule")
    return None
