"""A pure-Python reader of TFLite model files (the ``TFL3`` flatbuffer schema), for the numpy backend.

:func:`parse_tflite` turns a buffer into plain dataclasses: subgraphs, tensors (shape, dtype, quantization
with per-channel scales and zero points, constant data as zero-copy numpy views into the buffer),
operators (builtin op name resolved from ``builtin_code`` / ``deprecated_builtin_code`` as TFLite does, the
builtin options decoded into a dict) -- only what running an image classifier needs. Field numbers follow
tensorflow/lite/schema/schema.fbs.

Every structural problem raises :class:`~._flatbuffer.FlatbufferError` (bounds, declared sizes, tensor or
buffer indices out of range, constant data that does not match its shape); :func:`load_tflite_model` turns
it into one :class:`~slidelite.errors.ModelError` line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ._flatbuffer import Buffer, FlatbufferError, Table

#: Tensors of higher rank are refused (TFLite kernels stop at 6 dimensions).
MAX_RANK = 8

#: BuiltinOperator enum (schema.fbs), by code; codes past the end are named ``BUILTIN_<code>``.
OP_NAMES: Tuple[str, ...] = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION
LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH
CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM
ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR
ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE
RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND
COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE
HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE
BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1
UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR
RIGHT_SHIFT""".split())

#: TensorType enum -> numpy dtype (little-endian); the other types (string, int4, complex...) map to None.
DTYPES: Dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<i4"), 3: np.dtype("u1"), 4: np.dtype("<i8"),
    6: np.dtype("?"), 7: np.dtype("<i2"), 9: np.dtype("i1"), 10: np.dtype("<f8"), 12: np.dtype("<u8"),
    15: np.dtype("<u4"), 16: np.dtype("<u2"),
}
TYPE_NAMES: Tuple[str, ...] = tuple("""FLOAT32 FLOAT16 INT32 UINT8 INT64 STRING BOOL INT16 COMPLEX64 INT8 FLOAT64
COMPLEX128 UINT64 RESOURCE VARIANT UINT32 UINT16 INT4 BFLOAT16 INT2 UINT4 FLOAT8_E4M3FN FLOAT8_E5M2""".split())

# Field numbers of the tables read here (schema.fbs)
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 0, 1, 2, 3, 4
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS, _GRAPH_NAME = 0, 1, 2, 3, 4
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT, _TENSOR_SPARSITY, _TENSOR_SIGNATURE = \
    0, 1, 2, 3, 4, 6, 7
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS_TYPE, _OP_OPTIONS = 0, 1, 2, 3, 4
_CODE_DEPRECATED, _CODE_CUSTOM, _CODE_VERSION, _CODE_BUILTIN = 0, 1, 2, 3
_QUANT_SCALE, _QUANT_ZERO_POINT, _QUANT_DIMENSION = 2, 3, 6

# BuiltinOptions union member -> its fields as (name, field number, struct format or 'v' for [int], default)
_OptionSpec = Tuple[Tuple[str, int, str, Any], ...]
_POOL: _OptionSpec = (("padding", 0, "<B", 0), ("stride_w", 1, "<i", 0), ("stride_h", 2, "<i", 0),
                      ("filter_width", 3, "<i", 0), ("filter_height", 4, "<i", 0), ("activation", 5, "<B", 0))
_ACTIVATION_ONLY: _OptionSpec = (("activation", 0, "<B", 0),)
OPTIONS: Dict[int, _OptionSpec] = {
    1: (("padding", 0, "<B", 0), ("stride_w", 1, "<i", 0), ("stride_h", 2, "<i", 0), ("activation", 3, "<B", 0),
        ("dilation_w", 4, "<i", 1), ("dilation_h", 5, "<i", 1)),
    2: (("padding", 0, "<B", 0), ("stride_w", 1, "<i", 0), ("stride_h", 2, "<i", 0), ("depth_multiplier", 3, "<i", 0),
        ("activation", 4, "<B", 0), ("dilation_w", 5, "<i", 1), ("dilation_h", 6, "<i", 1)),
    5: _POOL,
    8: (("activation", 0, "<B", 0), ("weights_format", 1, "<B", 0), ("keep_num_dims", 2, "<B", 0),
        ("asymmetric_quantize_inputs", 3, "<B", 0)),
    9: (("beta", 0, "<f", 0.0),),
    10: (("axis", 0, "<i", 0), ("activation", 1, "<B", 0)),
    11: _ACTIVATION_ONLY, 21: _ACTIVATION_ONLY, 28: _ACTIVATION_ONLY, 29: _ACTIVATION_ONLY,
    17: (("new_shape", 0, "v", ()),),
    23: (("axis", 0, "<i", 0), ("batch_dims", 1, "<i", 0)),
    27: (("keep_dims", 0, "<B", 0),),
    30: (("squeeze_dims", 0, "v", ()),),
    32: (("begin_mask", 0, "<i", 0), ("end_mask", 1, "<i", 0), ("ellipsis_mask", 2, "<i", 0),
         ("new_axis_mask", 3, "<i", 0), ("shrink_axis_mask", 4, "<i", 0), ("offset", 5, "<B", 0)),
    35: (("num_splits", 0, "<i", 0),),
    59: (("values_count", 0, "<i", 0), ("axis", 1, "<i", 0)),
    75: (("alpha", 0, "<f", 0.0),),
    79: (("num_splits", 0, "<i", 0),),
    101: (("adj_x", 0, "<B", 0), ("adj_y", 1, "<B", 0), ("asymmetric_quantize_inputs", 2, "<B", 0)),
    116: (("approximate", 0, "<B", 0),),
}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: ``real = scale * (q - zero_point)``, per tensor or per channel along ``axis``."""

    scale: np.ndarray  # float32, one value or one per channel
    zero_point: np.ndarray  # int64, same length as scale
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        """True when scales vary along :attr:`axis` (more than one scale)."""
        return self.scale.size > 1


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph.

    Attributes:
        index: position in the subgraph's tensor list.
        name: its name.
        shape: static shape (``shape_signature`` -1 entries are dynamic: see :attr:`signature`).
        signature: the shape signature (empty when the file has none).
        type_code: the TensorType enum value.
        data: the constant value (a read-only view into the file), or None for run-time tensors.
        quantization: affine parameters, or None (float tensors).
    """

    index: int
    name: str
    shape: Tuple[int, ...]
    signature: Tuple[int, ...]
    type_code: int
    data: Optional[np.ndarray] = None
    quantization: Optional[Quantization] = None

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The numpy dtype, or None for a type numpy cannot hold."""
        return DTYPES.get(self.type_code)

    @property
    def type_name(self) -> str:
        """The TensorType name (``'INT8'``...)."""
        return TYPE_NAMES[self.type_code] if 0 <= self.type_code < len(TYPE_NAMES) else f"TYPE_{self.type_code}"


@dataclass(frozen=True)
class Operator:
    """One operator: builtin op name and version, tensor indices (-1: an omitted optional input), options."""

    index: int
    op: str
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Subgraph:
    """A subgraph: tensors, input/output tensor indices and operators in execution order."""

    name: str
    tensors: Tuple[Tensor, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    operators: Tuple[Operator, ...]


@dataclass(frozen=True)
class TFLiteModel:
    """A decoded ``.tflite`` file."""

    version: int
    description: str
    subgraphs: Tuple[Subgraph, ...]


def op_name(code: int) -> str:
    """The BuiltinOperator name of ``code``."""
    return OP_NAMES[code] if 0 <= code < len(OP_NAMES) else f"BUILTIN_{code}"


def parse_tflite(data: Any) -> TFLiteModel:
    """Decode a TFLite flatbuffer held in ``data`` (bytes-like; constant tensors are views into it).

    Raises:
        FlatbufferError: anything malformed (see the module docstring).
    """
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise FlatbufferError("not a TFLite flatbuffer (no TFL3 identifier)")
    buf = Buffer(data)
    root = buf.root()
    buffers = [_buffer_data(buf, table) for table in root.tables(_MODEL_BUFFERS)]
    codes = [_op_code(table) for table in root.tables(_MODEL_OPCODES)]
    subgraphs = tuple(_subgraph(table, buffers, codes) for table in root.tables(_MODEL_SUBGRAPHS))
    return TFLiteModel(version=int(root.scalar(_MODEL_VERSION, "<I")), description=root.string(_MODEL_DESCRIPTION),
                       subgraphs=subgraphs)


def load_tflite_model(path: Path) -> TFLiteModel:
    """Read and decode the file at ``path``.

    Raises:
        ModelError: unreadable, or a malformed/hostile flatbuffer (one line naming the file and the problem).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    try:
        return parse_tflite(data)
    except FlatbufferError as exc:
        raise ModelError(f"{path}: broken TFLite model file ({exc}); download or convert it again") from None


def _buffer_data(buf: Buffer, table: Table) -> Optional[Tuple[int, int]]:
    """``(start, size)`` of a Buffer's bytes in the file (inline data, or offset/size outside the flatbuffer)."""
    found = table.vector(_BUFFER_DATA, 1)
    if found is not None and found[1]:
        return found
    offset = int(table.scalar(_BUFFER_OFFSET, "<Q"))
    if offset > 1:
        size = int(table.scalar(_BUFFER_SIZE, "<Q"))
        buf.check(offset, size)
        return offset, size
    return None


def _op_code(table: Table) -> Tuple[str, int]:
    """``(op name, version)``; the builtin code is the larger of ``builtin_code`` and ``deprecated_builtin_code``
    (TFLite's rule: old files only set the byte, new files set both, codes past 127 only fit the int). Custom
    ops are named ``CUSTOM:<custom_code>``."""
    deprecated = int(table.scalar(_CODE_DEPRECATED, "<b"))
    name = op_name(max(deprecated, int(table.scalar(_CODE_BUILTIN, "<i"))))
    if name == "CUSTOM":
        name = f"CUSTOM:{table.string(_CODE_CUSTOM)}"
    return name, int(table.scalar(_CODE_VERSION, "<i", 1))


def _subgraph(table: Table, buffers: List[Optional[Tuple[int, int]]], codes: List[Tuple[str, int]]) -> Subgraph:
    tensors = tuple(_tensor(i, t, buffers) for i, t in enumerate(table.tables(_GRAPH_TENSORS)))
    count = len(tensors)
    inputs, outputs = _indices(table, _GRAPH_INPUTS, count), _indices(table, _GRAPH_OUTPUTS, count)
    operators = tuple(_operator(i, t, codes, count) for i, t in enumerate(table.tables(_GRAPH_OPERATORS)))
    return Subgraph(table.string(_GRAPH_NAME), tensors, inputs, outputs, operators)


def _indices(table: Table, index: int, count: int, optional: bool = False) -> Tuple[int, ...]:
    values = table.ints(index)
    low = -1 if optional else 0
    for value in values:
        if not low <= value < count:
            raise FlatbufferError(f"tensor index {value} is out of range (the subgraph has {count} tensors)")
    return values


def _tensor(index: int, table: Table, buffers: List[Optional[Tuple[int, int]]]) -> Tensor:
    name = table.string(_TENSOR_NAME)
    shape = table.ints(_TENSOR_SHAPE)
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise FlatbufferError(f"tensor '{name}' has shape {list(shape)}")
    if table.field(_TENSOR_SPARSITY) is not None:
        raise FlatbufferError(f"tensor '{name}' is sparse, which the numpy backend does not read")
    tensor = Tensor(index, name, shape, table.ints(_TENSOR_SIGNATURE), int(table.scalar(_TENSOR_TYPE, "<b")),
                    quantization=_quantization(table.table(_TENSOR_QUANT), name))
    buffer = int(table.scalar(_TENSOR_BUFFER, "<I"))
    if buffer >= len(buffers):
        raise FlatbufferError(f"tensor '{name}' uses buffer {buffer}, the file has {len(buffers)}")
    location = buffers[buffer]
    if location is None:
        return tensor
    dtype = tensor.dtype
    if dtype is None:
        raise FlatbufferError(f"constant tensor '{name}' has type {tensor.type_name}, which numpy cannot hold")
    start, size = location
    elements = int(np.prod(shape, dtype=np.int64))
    if elements * dtype.itemsize != size:
        raise FlatbufferError(f"constant tensor '{name}' {list(shape)} {tensor.type_name} needs "
                              f"{elements * dtype.itemsize} bytes, its buffer holds {size}")
    data = np.frombuffer(table.buf.data, dtype=dtype, count=elements, offset=start).reshape(shape)
    return Tensor(index, name, shape, tensor.signature, tensor.type_code, data, tensor.quantization)


def _quantization(table: Optional[Table], name: str) -> Optional[Quantization]:
    if table is None:
        return None
    scale = table.array(_QUANT_SCALE, "<f4")
    if scale is None or not scale.size:
        return None
    zero_point = table.array(_QUANT_ZERO_POINT, "<i8")
    zero_point = np.zeros(scale.size, np.int64) if zero_point is None or not zero_point.size else zero_point
    if zero_point.size != scale.size:
        raise FlatbufferError(f"tensor '{name}' has {scale.size} scales but {zero_point.size} zero points")
    return Quantization(scale.astype(np.float32), zero_point.astype(np.int64),
                        int(table.scalar(_QUANT_DIMENSION, "<i")))


def _operator(index: int, table: Table, codes: List[Tuple[str, int]], count: int) -> Operator:
    opcode = int(table.scalar(_OP_OPCODE, "<I"))
    if opcode >= len(codes):
        raise FlatbufferError(f"operator {index} uses operator code {opcode}, the file has {len(codes)}")
    name, version = codes[opcode]
    inputs = _indices(table, _OP_INPUTS, count, optional=True)
    outputs = _indices(table, _OP_OUTPUTS, count)
    options: Dict[str, Any] = {}
    spec = OPTIONS.get(int(table.scalar(_OP_OPTIONS_TYPE, "<B")))
    sub = table.table(_OP_OPTIONS) if spec else None
    for key, number, fmt, default in spec or ():
        if sub is None:
            options[key] = default
        elif fmt == "v":
            options[key] = sub.ints(number)
        else:
            options[key] = sub.scalar(number, fmt, default)
    return Operator(index, name, version, inputs, outputs, options)


def has_hybrid_ops(path: Path) -> bool:
    """True when a FULLY_CONNECTED of the ``.tflite`` file at ``path`` takes float activations and int8 weights
    (dynamic-range quantization: each activation row is quantized on the fly, so engines agree on its outputs to
    within one int8 step of a row, not to float precision)."""
    graph = load_tflite_model(path).subgraphs[0]
    return any(op.op == "FULLY_CONNECTED" and graph.tensors[op.inputs[0]].type_name == "FLOAT32"
               and graph.tensors[op.inputs[1]].type_name == "INT8" for op in graph.operators)

