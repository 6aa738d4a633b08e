"""Build-time checks: can the browser runtimes run this model file?

``slidelite web`` refuses a model a phone's browser cannot run, with one line, before writing a site:

* any model larger than :data:`MAX_MODEL_BYTES` (browsers give a page a few hundred MB of WebAssembly
  memory; the model is copied into it);
* ONNX (onnxruntime-web): external-data tensors (one file is served), and operators from domains that
  onnxruntime-web does not implement (anything but the standard ONNX domains and ``com.microsoft``);
* TFLite (MediaPipe Tasks Web ``ImageClassifier``): custom operators (Flex/TF select ops included: the web
  runtime registers only the builtin ones), an int8 input tensor and grey-scale models (MediaPipe feeds
  RGB images to float32 or uint8 inputs).
"""
from __future__ import annotations

import mmap
from typing import List

from ..backends._flatbuffer import Buffer, FlatbufferError
from ..backends._onnx_reader import load_onnx_model
from ..errors import ModelError
from ..metadata import ModelMetadata
from ..model_file import ModelFile

MAX_MODEL_BYTES = 512 * 1024 * 1024
ONNX_WEB_DOMAINS = ("ai.onnx", "ai.onnx.ml", "com.microsoft")
_TFLITE_MODEL_OPERATOR_CODES = 1
_TFLITE_OPCODE_CUSTOM_CODE = 1


def check_browser_runnable(model_file: ModelFile, metadata: ModelMetadata) -> None:
    """Raise when the browser runtime for ``model_file``'s format cannot run it.

    Raises:
        ModelError: one line naming the file, the problem and what to do.
    """
    name = model_file.name
    if model_file.size > MAX_MODEL_BYTES:
        raise ModelError(f"{name}: {model_file.size / 2**20:.0f} MiB is too large for a phone's browser "
                         f"(limit {MAX_MODEL_BYTES // 2**20} MiB); convert a smaller or int8 model")
    if model_file.format == "onnx":
        _check_onnx(name)
    else:
        _check_tflite(name, metadata)


def _check_onnx(name: str) -> None:
    try:
        model = load_onnx_model(name)
    except ModelError as exc:
        raise ModelError(f"{exc}; onnxruntime-web needs a self-contained .onnx file") from None
    foreign = sorted({f"{node.domain}::{node.op_type}" for node in model.graph.nodes
                      if (node.domain or "ai.onnx") not in ONNX_WEB_DOMAINS})
    if foreign:
        raise ModelError(f"{name}: onnxruntime-web cannot run the custom operator(s) {', '.join(foreign)}; "
                         "export the model with standard ONNX operators")


def tflite_custom_ops(path: str) -> List[str]:
    """The custom operator names (``custom_code``) a TFLite file uses, in file order.

    Raises:
        ModelError: the operator table lies outside the file.
    """
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            codes = Buffer(data).root().tables(_TFLITE_MODEL_OPERATOR_CODES)
            return [code.string(_TFLITE_OPCODE_CUSTOM_CODE) for code in codes
                    if code.field(_TFLITE_OPCODE_CUSTOM_CODE) is not None]
    except FlatbufferError:
        raise ModelError(f"{path}: truncated TFLite model file; download or convert it again") from None


def _check_tflite(name: str, metadata: ModelMetadata) -> None:
    custom = tflite_custom_ops(name)
    if custom:
        raise ModelError(f"{name}: MediaPipe Tasks Web cannot run the custom operator(s) {', '.join(custom)}; "
                         "convert with builtin TFLite operators only, or use the .onnx model")
    if metadata.preprocess.color_mode != "RGB":
        raise ModelError(f"{name}: MediaPipe Tasks Web feeds RGB images, this model takes colour mode "
                         f"{metadata.preprocess.color_mode}; use the model's .onnx file")
    if metadata.input.dtype not in ("float32", "uint8"):
        raise ModelError(f"{name}: MediaPipe Tasks Web takes float32 or uint8 image inputs, not "
                         f"{metadata.input.dtype}; convert with a float32 or uint8 input, or use the .onnx model")
