"""Step 4: int8 post-training quantization of an fp32 ONNX file with an explicit, named recipe.

Each :class:`Int8Recipe` fixes every choice that matters for speed and accuracy on a CPU: dynamic vs
static activations, QDQ vs QOperator format, which op types are quantized (the rest stay float:
LayerNorm, Softmax, GELU, the Slide depthwise conv), per-channel weights, reduce_range (7-bit weights,
avoiding int16 overflow in AVX2 u8s8 kernels), activation/weight types and the calibration method.
``benchmarks/int8_recipes.py`` measures them side by side; ``docs/converter.md`` has the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from slidelite.errors import UsageError

from .errors import ConversionError
from .onnx_export import quiet_loggers


@dataclass(frozen=True)
class Int8Recipe:
    """One int8 quantization recipe (see the module docstring)."""

    name: str
    summary: str
    static: bool
    op_types: Tuple[str, ...]
    per_channel: bool = True
    reduce_range: bool = True
    quant_format: str = "QDQ"
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    weights_only: bool = True
    extra_options: Dict[str, Any] = field(default_factory=dict)
    int8_storage: bool = False  # int8 weight storage, float compute (slidelite.convert.int8_weights)
    precision: str = "int8"


_FLOAT_OUTPUTS = {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]}
RECIPES: Dict[str, Int8Recipe] = {r.name: r for r in (
    Int8Recipe("dynamic-matmul",
               "dynamic int8 of the weight MatMul/Gemm (per-channel 7-bit weights, activations quantized per run); "
               "everything else fp32",
               static=False, op_types=("MatMul", "Gemm")),
    Int8Recipe("dynamic-matmul-8bit",
               "as dynamic-matmul with full 8-bit weights (reduce_range off): more accurate; safe only on CPUs with "
               "VNNI/ARM dot-product int8 kernels (AVX2 u8s8 can saturate int16)",
               static=False, op_types=("MatMul", "Gemm"), reduce_range=False),
    Int8Recipe("static-qdq-matmul",
               "static QDQ of the weight MatMul/Gemm inputs only (per-channel 7-bit weights, MinMax-calibrated uint8 "
               "activations, float outputs); LayerNorm/Softmax/GELU/conv stay fp32",
               static=True, op_types=("MatMul", "Gemm"), extra_options=_FLOAT_OUTPUTS),
    Int8Recipe("static-qdq-all",
               "static QDQ of every op onnxruntime can quantize (its defaults: per-tensor, MinMax): the baseline "
               "the issue measured as slower than fp32",
               static=True, op_types=(), per_channel=False, reduce_range=False, weights_only=False),
    Int8Recipe("static-qdq-conv",
               "static QDQ of every op onnxruntime can quantize, per-channel 7-bit weights, MinMax-calibrated uint8 "
               "activations: the CNN recipe (Conv weights int8, QLinearConv)",
               static=True, op_types=(), weights_only=False),
    Int8Recipe("weight-only",
               "int8 weight storage, float32 compute: Conv/Gemm weights rounded with GPTQ + bias correction on the "
               "calibration images, stored int8 per channel (small layers float16); same speed as fp32",
               static=False, op_types=("Conv", "Gemm"), int8_storage=True, precision="int8-weights"),
)}
DEFAULT_RECIPE = "dynamic-matmul"


def get_recipe(name: Optional[str]) -> Int8Recipe:
    """The recipe called ``name``; None means :data:`DEFAULT_RECIPE` (the converter itself picks by the graph
    when ``--int8-recipe`` is not given: :func:`slidelite.convert.int8_coverage.choose_recipe`).

    Raises:
        UsageError: unknown name (the known ones are listed).
    """
    name = DEFAULT_RECIPE if name is None else name
    if name not in RECIPES:
        raise UsageError(f"unknown --int8-recipe '{name}'; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def quantize_onnx(fp32_path: Path, int8_path: Path, recipe: Int8Recipe, reader: Optional[Any] = None) -> Path:
    """Quantize ``fp32_path`` into ``int8_path`` with ``recipe``; static recipes need a calibration ``reader``.

    Raises:
        ConversionError: a static recipe without calibration data, or onnxruntime's quantizer failed.
    """
    from onnxruntime import quantization as q

    if recipe.int8_storage:
        raise ConversionError(f"int8 recipe {recipe.name} rounds the torch weights before export: run it with convert()")
    if recipe.static and reader is None:
        raise ConversionError(f"int8 recipe {recipe.name} needs calibration images: pass --calib DIR")
    common = dict(op_types_to_quantize=list(recipe.op_types) or None, per_channel=recipe.per_channel,
                  reduce_range=recipe.reduce_range, weight_type=getattr(q.QuantType, recipe.weight_type))
    try:
        with quiet_loggers(""):
            if recipe.static:
                q.quantize_static(str(fp32_path), str(int8_path), reader, **common,
                                  nodes_to_quantize=weight_matmul_nodes(fp32_path) if recipe.weights_only else None,
                                  quant_format=getattr(q.QuantFormat, recipe.quant_format),
                                  activation_type=getattr(q.QuantType, recipe.activation_type),
                                  calibrate_method=getattr(q.CalibrationMethod, recipe.calibrate_method),
                                  extra_options=dict(recipe.extra_options))
            else:
                q.quantize_dynamic(str(fp32_path), str(int8_path), **common, extra_options=dict(recipe.extra_options))
    except Exception as exc:  # onnxruntime's quantizer raises bare Exceptions
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"int8 quantization ({recipe.name}) failed: {first}") from None
    return Path(int8_path)


def weight_matmul_nodes(path: Path) -> List[str]:
    """Names of the MatMul/Gemm nodes that multiply by a stored weight (not activation x activation products)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm") and node.name
            and any(name in weights for name in node.input[:2])]
