"""A real, small ONNX image classifier built with the ``onnx`` package, plus its numpy reference.

``make_fixture_onnx(path, **variant)`` writes the model with slidelite metadata embedded; other tests
reuse it. The graph is Conv(3x3, stride 2, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm with
seeded random weights; variants change the input layout (NHWC adds a Transpose), the colour mode (L: one
input channel), the input dtype (uint8/int8: the graph dequantizes ``(q - zero_point) * scale``), the
output (uint8 quantized logits, or softmax probabilities) and the batch dimension. ``reference_forward``
computes the same model in plain numpy, independently of onnxruntime.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CONV_CHANNELS = 8
DEFAULTS: Dict[str, Any] = dict(
    layout="NCHW", color_mode="RGB", dtype="float32", size=32, crop_pct=0.875, interpolation="bicubic",
    resize_mode="shorter_side", output_kind="logits", output_dtype="float32", dynamic_batch=True, seed=0,
    input_quant=None, output_quant=(0.05, 128), labels=LABELS,
)
#: default input quantization (scale, zero_point) per integer dtype: covers the normalized range [-2.56, 2.54]
INPUT_QUANT = {"uint8": (0.02, 128), "int8": (0.02, 0)}


def fixture_weights(color_mode: str = "RGB", seed: int = 0, num_classes: int = len(LABELS)) -> Dict[str, np.ndarray]:
    """The seeded weights of the fixture model."""
    rng = np.random.default_rng(seed)
    channels = 3 if color_mode == "RGB" else 1
    return {
        "conv_w": rng.normal(0, 0.5, (CONV_CHANNELS, channels, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, CONV_CHANNELS).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (num_classes, CONV_CHANNELS)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, num_classes).astype(np.float32),
    }


def _variant(overrides: Dict[str, Any]) -> Dict[str, Any]:
    v = {**DEFAULTS, **overrides}
    if v["input_quant"] is None:
        v["input_quant"] = INPUT_QUANT.get(v["dtype"])
    return v


def fixture_metadata(**variant: Any) -> Dict[str, Any]:
    """The slidelite metadata document (a dict) of a fixture variant (see :data:`DEFAULTS`)."""
    v = _variant(variant)
    channels = 3 if v["color_mode"] == "RGB" else 1
    inp: Dict[str, Any] = {"name": "pixels", "height": v["size"], "width": v["size"], "layout": v["layout"],
                           "dtype": v["dtype"]}
    if v["dtype"] != "float32":
        inp["quantization"] = {"scale": v["input_quant"][0], "zero_point": v["input_quant"][1]}
    out: Dict[str, Any] = {"name": "scores", "kind": v["output_kind"]}
    if v["output_dtype"] != "float32":
        out["quantization"] = {"scale": v["output_quant"][0], "zero_point": v["output_quant"][1]}
    return {
        "schema": "slidelite.metadata", "schema_version": 1, "name": "fixture_cnn", "labels": list(v["labels"]),
        "input": inp,
        "preprocess": {"color_mode": v["color_mode"], "resize_mode": v["resize_mode"], "crop_pct": v["crop_pct"],
                       "interpolation": v["interpolation"], "mean": [0.485, 0.456, 0.406][:channels],
                       "std": [0.229, 0.224, 0.225][:channels]},
        "output": out, "precision": "fp32", "description": "test fixture",
        "provenance": {"architecture": "fixture_cnn", "converter_version": "tests"},
    }


def make_fixture_onnx(path: "str | Path", metadata: Optional[Dict[str, Any]] = None, embed: bool = True,
                      num_classes: int = len(LABELS), **variant: Any) -> Path:
    """Write the fixture classifier to ``path`` and return it.

    Args:
        path: the ``.onnx`` file to write.
        metadata: the metadata document to embed (default: :func:`fixture_metadata` of the variant);
            pass a modified dict to test bad metadata.
        embed: False writes the model without slidelite metadata.
        num_classes: the output width of the graph.
        **variant: overrides of :data:`DEFAULTS`.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v = _variant(variant)
    w = fixture_weights(v["color_mode"], v["seed"], num_classes)
    channels = w["conv_w"].shape[1]
    size, batch = v["size"], ("batch" if v["dynamic_batch"] else 1)
    shape = [batch, channels, size, size] if v["layout"] == "NCHW" else [batch, size, size, channels]
    in_type = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8}[v["dtype"]]
    inits = [numpy_helper.from_array(a, k) for k, a in w.items()]
    nodes, x = [], "pixels"
    if v["dtype"] != "float32":
        scale, zero = v["input_quant"]
        inits += [numpy_helper.from_array(np.array(scale, np.float32), "in_scale"),
                  numpy_helper.from_array(np.array(zero, np.float32), "in_zero")]
        nodes += [helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["xf", "in_zero"], ["xc"]),
                  helper.make_node("Mul", ["xc", "in_scale"], ["xd"])]
        x = "xd"
    if v["layout"] == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    y, out_type = "logits", TensorProto.FLOAT
    if v["output_kind"] == "probabilities":
        nodes.append(helper.make_node("Softmax", [y], ["probs"], axis=1))
        y = "probs"
    if v["output_dtype"] != "float32":
        scale, zero = v["output_quant"]
        inits += [numpy_helper.from_array(np.array(scale, np.float32), "out_scale"),
                  numpy_helper.from_array(np.array(zero, np.uint8), "out_zero")]
        nodes.append(helper.make_node("QuantizeLinear", [y, "out_scale", "out_zero"], ["yq"]))
        y, out_type = "yq", TensorProto.UINT8
    nodes.append(helper.make_node("Identity", [y], ["scores"]))
    graph = helper.make_graph(nodes, "fixture_cnn", [helper.make_tensor_value_info("pixels", in_type, shape)],
                              [helper.make_tensor_value_info("scores", out_type, [batch, num_classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="slidelite-tests")
    model.ir_version = 8
    if embed:
        document = fixture_metadata(**variant) if metadata is None else metadata
        helper.set_model_props(model, {"slidelite.metadata": json.dumps(document)})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_forward(tensor: np.ndarray, **variant: Any) -> np.ndarray:
    """The fixture model's raw output computed in float64 numpy (no onnxruntime)."""
    v = _variant(variant)
    w = {k: a.astype(np.float64) for k, a in fixture_weights(v["color_mode"], v["seed"]).items()}
    x = tensor.astype(np.float64)
    if v["dtype"] != "float32":
        x = (x - v["input_quant"][1]) * np.float32(v["input_quant"][0])
    if v["layout"] == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    conv = _conv3x3_s2(x, w["conv_w"]) + w["conv_b"][None, :, None, None]
    logits = np.maximum(conv, 0).mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"]
    if v["output_kind"] == "probabilities":
        logits = softmax(logits)
    if v["output_dtype"] != "float32":
        scale, zero = v["output_quant"]
        logits = np.clip(np.rint(logits / scale) + zero, 0, 255)
    return logits


def _conv3x3_s2(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 convolution, stride 2, zero padding 1, NCHW."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.zeros((n, kernel.shape[0], out_h, out_w))
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, :, dy:dy + 2 * out_h:2, dx:dx + 2 * out_w:2]
            out += np.einsum("nchw,oc->nohw", patch, kernel[:, :, dy, dx])
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def reference_preprocess(image: "Any", size: int = 32, crop_pct: float = 0.875, mean: Sequence[float] = (0.485, 0.456, 0.406),
                         std: Sequence[float] = (0.229, 0.224, 0.225)) -> np.ndarray:
    """Independent timm-style eval preprocessing of an RGB PIL image for a square input: shorter side to
    ``floor(size / crop_pct)`` (bicubic), centre crop, ``(x / 255 - mean) / std``, HWC float64."""
    from PIL import Image

    scale = int(size / crop_pct)
    w, h = image.size
    new = (scale, scale * h // w) if w <= h else (scale * w // h, scale)
    resized = image.resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float64)
    return (pixels / 255.0 - np.asarray(mean)) / np.asarray(std)


def make_tflite_like(path: "str | Path", weight_bytes: int = 4096, metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write a minimal TFLite flatbuffer (identifier ``TFL3``; a Model table, version 3, whose ``buffers``
    vector holds the mandatory empty buffer and one ``weight_bytes`` weight buffer). With ``metadata``, the
    slidelite document is appended as a ZIP archive, as the TFLite Metadata populator stores associated
    files. It has no subgraphs, so no interpreter can run it: it exercises format detection, the truncation
    check and metadata extraction only."""
    import struct
    import zipfile

    out = bytearray(8)

    def put(fmt: str, *values: Any) -> int:
        at = len(out)
        out.extend(struct.pack(fmt, *values))
        return at

    model_vtable = put("<7H", 14, 12, 4, 0, 0, 0, 8)  # fields 0 (version) and 4 (buffers)
    put("<H", 0)  # align the table to 4 bytes
    model = put("<i", len(out) - model_vtable)
    put("<I", 3)
    buffers_field = put("<I", 0)
    vector = put("<3I", 2, 0, 0)  # two uoffsets, patched below (flatbuffer offsets point forward)
    empty_vtable = put("<2H", 4, 4)
    empty = put("<i", len(out) - empty_vtable)
    weight_vtable = put("<4H", 6, 8, 4, 0)  # field 0 (data)
    weight = put("<i", len(out) - weight_vtable)
    data_field = put("<I", 0)
    data = put("<I", weight_bytes)
    out.extend(np.random.default_rng(0).integers(0, 256, weight_bytes, dtype=np.uint8).tobytes())
    struct.pack_into("<2I", out, vector + 4, empty - (vector + 4), weight - (vector + 8))
    struct.pack_into("<I", out, buffers_field, vector - buffers_field)
    struct.pack_into("<I", out, data_field, data - data_field)
    struct.pack_into("<I4s", out, 0, model, b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(out))
    if metadata is not None:
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("slidelite_metadata.json", json.dumps(metadata))
    return path
