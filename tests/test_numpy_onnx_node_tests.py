"""The numpy backend against the ONNX project's own backend node tests (onnx 1.18.0's test data).

Every case (one small model, its inputs and the reference outputs; ``scripts/fetch_onnx_node_tests.py``
downloads the pinned, sha256-checked wheel that holds them) is sorted by the ops it uses:

* every op claimed (registered in the numpy backend): the case either runs and matches the reference
  (floats: ONNX's own default tolerance, rtol 1e-3 / atol 1e-7; integers and booleans: exactly), or is
  refused AT LOAD in one line naming the node and op (an attribute or type outside the kernels) — it never
  fails at run time and never gives a wrong answer;
* any op not claimed: refused at load in one line naming it.

:func:`test_claimed_cases_mostly_run` keeps the coverage from shrinking silently.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from slidelite.backends._numpy_ops import OPS, op_key
from slidelite.backends._onnx_plan import OnnxPlan
from slidelite.backends._onnx_reader import load_onnx_model, parse_tensor
from slidelite.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
#: cases that ran and matched when this floor was set (of 1450; the rest were refused at load)
MIN_PASSED = 872


def _node_test_folder() -> Path:
    spec = importlib.util.spec_from_file_location("fetch_onnx_node_tests", ROOT / "scripts" / "fetch_onnx_node_tests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.node_tests()


FOLDER = _node_test_folder()
CASES = sorted(p.name for p in FOLDER.iterdir() if (p / "model.onnx").exists())
OUTCOMES: Dict[str, str] = {}
#: cases whose stored outputs are wrong: onnx 1.18's reference wraps int8 overflow around instead of saturating
#: as the QLinearMatMul spec (and onnxruntime) does; these are compared with onnxruntime instead
WRAPPING_REFERENCE = {f"test_qlinearmatmul_{d}_int8_{t}" for d in ("2D", "3D") for t in ("float16", "float32")}


def _tensors(folder: Path, kind: str) -> List[np.ndarray]:
    files = sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    out = []
    for path in files:
        blob = path.read_bytes()
        out.append(parse_tensor(blob, 0, len(blob))[1])
    return out


def _onnxruntime(path: Path, inputs: List[np.ndarray]) -> List[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def _claimed(case: str) -> Tuple[bool, List[str]]:
    model = load_onnx_model(FOLDER / case / "model.onnx")
    keys = sorted({op_key(node) for node in model.graph.nodes})
    return all(key in OPS for key in keys), keys


def run_case(case: str) -> str:
    """'passed', 'refused' (at load, by design) or raises AssertionError (wrong result / run-time failure)."""
    folder = FOLDER / case
    try:
        model = load_onnx_model(folder / "model.onnx")
    except ModelError as exc:
        assert "\n" not in str(exc)
        return "refused"
    claimed, keys = _claimed(case)
    try:
        plan = OnnxPlan(model, case)
    except ModelError as exc:
        message = str(exc)
        assert "\n" not in message
        assert "opset" in message or "element type" in message or any(key in message for key in keys), message
        assert claimed or "does not implement" in message or "opset" in message or "element type" in message, message
        return "refused"
    assert claimed, f"{case}: loaded although it uses unclaimed ops {keys}"
    for data in sorted(folder.glob("test_data_set_*")):
        inputs, expected = _tensors(data, "input"), _tensors(data, "output")
        if case in WRAPPING_REFERENCE:
            expected = _onnxruntime(folder / "model.onnx", inputs)
        got = plan.run(*inputs[:len(plan.inputs)])
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape, f"{case}: shape {g.shape} != {e.shape}"
            assert g.dtype == e.dtype, f"{case}: dtype {g.dtype} != {e.dtype}"
            if e.dtype.kind in "fc":
                np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-7, err_msg=case)
            else:
                np.testing.assert_array_equal(g, e, err_msg=case)
    return "passed"


@pytest.mark.parametrize("case", CASES)
def test_node_case_passes_or_is_refused_at_load(case: str) -> None:
    OUTCOMES[case] = run_case(case)


def test_claimed_cases_mostly_run() -> None:
    """Runs after the cases (file order): the claimed op set really runs, not just refuses."""
    outcomes = [run_case(case) if case not in OUTCOMES else OUTCOMES[case] for case in CASES]
    passed = outcomes.count("passed")
    print(f"{passed} of {len(CASES)} ONNX node tests passed, {outcomes.count('refused')} refused at load")
    assert passed >= MIN_PASSED
