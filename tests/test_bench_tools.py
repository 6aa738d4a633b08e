"""The helpers of ``benchmarks/`` that turn measurements into published figures: the ONNX FLOP count
(the numerator of the achieved-GFLOP/s figure), the Markdown table and the docs-section writer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests._runtime_fixtures import CONV_CHANNELS, LABELS, make_fixture_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _common as common  # noqa: E402


def test_flops_of_the_fixture_graph(tmp_path):
    path = make_fixture_onnx(tmp_path / "f.onnx", size=32, dynamic_batch=False)
    flops = common.count_flops(path)
    # Conv 3x3 stride 2 of 3 -> 8 channels on 32x32: output 8x16x16, 3*3*3 multiply-adds per output
    assert flops["Conv"] == 2 * (CONV_CHANNELS * 16 * 16) * (3 * 3 * 3)
    # Gemm (1, 8) x (10, 8)^T: 10 outputs of 8 multiply-adds
    assert flops["Gemm"] == 2 * len(LABELS) * CONV_CHANNELS
    assert set(flops) == {"Conv", "Gemm"}


def test_flops_of_a_matmul_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path)
    assert common.count_flops(common.matmul_onnx(64)) == {"MatMul": 2 * 64 ** 3}


def test_markdown_table_and_docs_section(tmp_path):
    table = common.markdown_table([{"a": "x", "b": 1.23456}, {"a": "y", "b": None}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| x | 1.235 |", "| y | - |"]
    doc = tmp_path / "bench.md"
    doc.write_text("# T\n\n<!-- BEGIN s -->\nold\n<!-- END s -->\n\ntail\n", encoding="utf-8")
    common.update_docs_section("s", "new body", doc)
    common.update_docs_section("other", "appended", doc)
    assert doc.read_text(encoding="utf-8") == ("# T\n\n<!-- BEGIN s -->\nnew body\n<!-- END s -->\n\ntail\n\n"
                                               "<!-- BEGIN other -->\nappended\n<!-- END other -->\n")
