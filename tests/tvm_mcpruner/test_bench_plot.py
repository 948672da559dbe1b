"""`mcpruner bench --plot`: per-layer timings in the JSON and a PNG; every subcommand's --help has an example."""

from __future__ import annotations

import json
import struct

import pytest

from tvm_mcpruner.cli import EXAMPLE_MARKER, main

SUBCOMMANDS = ("demo", "prune", "compile", "tune", "bench", "tracker", "server")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_ends_with_one_example(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    example = out.split(EXAMPLE_MARKER, 1)[1].strip()
    assert example.startswith(f"mcpruner {command} ") and "\n" not in example, example


@pytest.mark.slow
def test_bench_plot_writes_a_png_and_one_row_per_layer(tmp_path, capsys: pytest.CaptureFixture) -> None:
    plot, result_json = tmp_path / "layers.png", tmp_path / "bench.json"
    code = main(["bench", "--model", "vgg11", "--width", "0.125", "--input-shape", "1,3,32,32",
                 "--num-classes", "10", "--repeat", "1", "--no-tvm-dense", "--threads", "2",
                 "--plot", str(plot), "--json", str(result_json)])
    assert code == 0
    assert f"wrote the per-layer plot to {plot}" in capsys.readouterr().out

    data = plot.read_bytes()
    assert data[:8] == PNG_SIGNATURE and 10_000 < len(data) < 500_000, len(data)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert 600 <= width <= 2000 and 400 <= height <= 3000, (width, height)

    layers = json.loads(result_json.read_text())["layers"]
    # one row per conv / linear layer the forward pass runs, in model order: vgg11 has 8 convs
    convs = [row for row in layers if row["op"].startswith("conv")]
    assert len(convs) == 8 and [row["name"] for row in convs] == [
        f"features.{i}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    for row in layers:
        assert set(row["median_ms"]) == {"torch", "onnxruntime", "mcpruner"}
        assert all(ms > 0 for ms in row["median_ms"].values()), row
        assert row["max_rel_error"] < 1e-4, row
    # the pruned 3x3 convs (all but the 3-channel stem) run sparse with 4.5x fewer MACs
    assert all(row["sparse"] and row["mac_reduction"] > 2 for row in convs[1:])
