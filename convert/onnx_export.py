"""Step 3 (ONNX): export a torch classifier to ONNX, simplify/fuse the graph, check it, embed metadata.

Exporter choice (measured on slide_swin_micro, torch 2.13): the dynamo exporter at opset 20 gives the
cleanest graph (203 nodes, native ``Gelu`` and ``LayerNormalization``); at opset 18 it decomposes GELU
into Erf/Div/Mul/Add (227 nodes); the legacy TorchScript exporter at opset 17 emits 738 nodes (shape
arithmetic, Erf GELU). So the default is dynamo at :data:`DEFAULT_OPSET` (needs onnxruntime >= 1.17).
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

from slidelite.metadata import ONNX_METADATA_KEY, ModelMetadata

from .errors import ConversionError, raise_if_interrupted

DEFAULT_OPSET = 20
MAX_RANK = 4
FOLD_LIMIT_BYTES = 1 << 20


def export_onnx(module: Any, path: Path, input_shape: Tuple[int, int, int, int], *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, input_name: str = "input", output_name: str = "logits") -> Path:
    """Export ``module`` (eval mode) to ``path`` with one NCHW float input and one logits output.

    Raises:
        ConversionError: the exporter failed (its last message line is included).
    """
    import torch

    # torch.export specializes a size-1 dimension, so a dynamic batch is traced with an example of 2
    example = torch.zeros((2, *input_shape[1:]) if dynamic_batch else input_shape)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), quiet_loggers("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=[input_name], output_names=[output_name], dynamic_shapes=dynamic_shapes,
                              external_data=False, optimize=True, verbose=False)
    except Exception as exc:  # the exporter raises many unrelated types; report its message in one line
        raise_if_interrupted(exc)
        raise ConversionError(f"ONNX export of {type(module).__name__} failed: {_export_failure(exc)}") from None
    return Path(path)


def _export_failure(exc: Exception) -> str:
    """The informative line of an exporter error: the root cause from its "Exception summary", else line one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    summary = text.partition("## Exception summary")[2].strip().splitlines()
    line = summary[0] if summary else (text.splitlines() or [type(exc).__name__])[0]
    return re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", line).strip()


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers ("" = root) to ERROR for the duration (exporter and quantizer chatter)."""
    import logging

    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def simplify_onnx(path: Path) -> Path:
    """Simplify and fuse the graph in place with onnxslim, then share identical initializers.

    onnxslim folds constants, removes dead and shape-only nodes and fuses MatMul+Add into Gemm. A
    folded constant larger than :data:`FOLD_LIMIT_BYTES` is left computed (e.g. Swin's relative-position
    bias, 1.8 MB per block when expanded from a 35 kB table): onnxruntime folds it in memory when the
    session starts, so latency is unchanged while the file stays small (Slide-Swin-T: 116 MB, not 125 MB).
    """
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)), size_threshold=FOLD_LIMIT_BYTES)
    share_identical_initializers(model)
    onnx.save(model, str(path))
    return Path(path)


def share_identical_initializers(model: Any) -> int:
    """Make nodes that use byte-identical initializers use one copy; returns how many copies were dropped."""
    import hashlib

    from onnx import numpy_helper

    first: Dict[tuple, str] = {}
    alias: Dict[str, str] = {}
    for init in model.graph.initializer:
        digest = hashlib.sha256(numpy_helper.to_array(init).tobytes()).hexdigest()
        alias[init.name] = first.setdefault((init.data_type, tuple(init.dims), digest), init.name)
    dropped = {name for name, kept in alias.items() if name != kept}
    if not dropped:
        return 0
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in dropped:
                node.input[i] = alias[name]
    kept = [init for init in model.graph.initializer if init.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(dropped)


def max_tensor_rank(path: Path) -> Dict[str, int]:
    """Run ONNX shape inference and return ``{tensor_name: rank}`` for every tensor above :data:`MAX_RANK` dims."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    graph = model.graph
    over: Dict[str, int] = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            rank = len(info.type.tensor_type.shape.dim)
            if rank > MAX_RANK:
                over[info.name] = rank
    for init in graph.initializer:
        if len(init.dims) > MAX_RANK:
            over[init.name] = len(init.dims)
    return over


def op_histogram(path: Path) -> Dict[str, int]:
    """``{op_type: count}`` of the graph's nodes, most frequent first."""
    import collections

    import onnx

    counts = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    return dict(counts.most_common())


def embed_metadata(path: Path, metadata: ModelMetadata, destination: Path | None = None) -> Path:
    """Store ``metadata.to_json()`` in the model's ``metadata_props`` under :data:`ONNX_METADATA_KEY`."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != ONNX_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=ONNX_METADATA_KEY, value=metadata.to_json())
    model.producer_name = "slidelite"
    target = Path(destination or path)
    onnx.save(model, str(target))
    return target


def onnx_session(path: Path, threads: int = 2) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, inputs: Any, threads: int = 2, batch: int = 1) -> Any:
    """Run the ONNX model on (N, C, H, W) inputs ``batch`` at a time; returns (N, classes) float32."""
    import numpy as np

    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i:i + batch]})[0] for i in range(0, len(inputs), batch)]
    return np.concatenate(outs, axis=0).astype(np.float32)
