"""The numpy backend's load-time fusions on ``.tflite`` files change the plan, not the answer.

Each fusion (sibling depthwise convolutions, lowered LayerNorm, lowered Slide attention) is switched on alone
and compared with the plan without any fusion on the shipped Slide-Swin files and real photos: the fused plan
has fewer steps, contains the fused kernel, and its scores equal the unfused ones within 1e-6 absolute + 1e-6 relative (a few float32 ulps; float file;
the dynamic-int8 file quantizes activations per row, so a last-bit difference may move one quantization step:
same top-1 and within that file's documented LiteRT tolerance there). No TFLite engine runs. A written LayerNorm
chain is fused and computes LayerNorm; the same chain with an intermediate read by one more op is left unfused.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from slidelite import models
from slidelite.backends._tflite_reader import load_tflite_model
from slidelite.backends.numpy_tflite_backend import FUSIONS, NumpyTFLiteBackend
from slidelite.model_file import open_model_file
from slidelite.preprocess import prepare_input
from tests._cli_fixtures import skimage_photo

PHOTOS = ("chelsea", "coffee", "astronaut")
#: the fused step's op name per fusion (the sibling depthwise step keeps its first operator's name)
FUSED_OP = {"sibling_depthwise": "DEPTHWISE_CONV_2D", "layer_norm": "LAYER_NORM", "slide_attention": "SLIDE_ATTENTION"}
#: the logits of the dynamic-int8 file may move by one activation quantization step (as in test_numpy_tflite.py)
HYBRID_ATOL = 2e-2
SWIN = {m.file: m.path for m in models.list_shipped() if m.format == "tflite" and "swin" in m.file}


def photos(path) -> Dict[str, np.ndarray]:
    """Real photos preprocessed for the model at ``path``."""
    metadata = open_model_file(path).metadata
    return {name: prepare_input(skimage_photo(name), metadata) for name in PHOTOS}


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("file", sorted(SWIN))
def test_each_fusion_keeps_the_scores_of_the_unfused_plan(file: str, fusion: str) -> None:
    path = SWIN[file]
    plain = NumpyTFLiteBackend(open_model_file(path), 1, fuse=())
    fused = NumpyTFLiteBackend(open_model_file(path), 1, fuse=(fusion,))
    assert len(fused._steps) < len(plain._steps)
    names = [step.op.op for step in fused._steps]
    if fusion == "sibling_depthwise":  # one step writes the outputs of several depthwise operators
        assert any(step.op.op == "DEPTHWISE_CONV_2D" and len(step.outputs) > 1 for step in fused._steps)
    else:
        assert FUSED_OP[fusion] in names and FUSED_OP[fusion] not in [s.op.op for s in plain._steps]
    hybrid = "int8" in file
    for name, tensor in photos(path).items():
        want, got = plain.run(tensor), fused.run(tensor)
        assert got.argmax() == want.argmax(), name
        np.testing.assert_allclose(got, want, rtol=0 if hybrid else 1e-6, atol=HYBRID_ATOL if hybrid else 1e-6, err_msg=name)


def test_all_fusions_together_keep_the_scores_and_cut_the_steps() -> None:
    path = SWIN["slide_swin_micro_fmnist.tflite"]
    plain = NumpyTFLiteBackend(open_model_file(path), 1, fuse=())
    fused = NumpyTFLiteBackend(open_model_file(path), 1)
    assert len(fused._steps) * 3 < len(plain._steps)
    for name, tensor in photos(path).items():
        np.testing.assert_allclose(fused.run(tensor), plain.run(tensor), rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("fuse", [("slide_attention",), FUSIONS], ids=["alone", "after-sibling-depthwise"])
@pytest.mark.parametrize("file", sorted(SWIN))
def test_slide_attention_absorbs_its_shift_convolutions(file: str, fuse: tuple) -> None:
    """Each fused attention reads the query and the two maps its 2 x 9 per-offset shift convolutions read (one
    DEPTHWISE_CONV_2D step each, or one sibling step): none of those convolutions is left, and the scores stay."""
    path = SWIN[file]
    plain = NumpyTFLiteBackend(open_model_file(path), 1, fuse=())
    fused = NumpyTFLiteBackend(open_model_file(path), 1, fuse=fuse)
    attentions = [step for step in fused._steps if step.op.op == "SLIDE_ATTENTION"]
    assert len(attentions) == 4 and all(len(step.op.inputs) == 3 for step in attentions)
    depthwise = [step for step in plain._steps if step.op.op == "DEPTHWISE_CONV_2D"]
    assert len(depthwise) == 4 * 2 * 9 + 1
    assert [step.op.op for step in fused._steps].count("DEPTHWISE_CONV_2D") == 1
    hybrid = "int8" in file
    for name, tensor in photos(path).items():
        np.testing.assert_allclose(fused.run(tensor), plain.run(tensor), rtol=0 if hybrid else 1e-5,
                                   atol=HYBRID_ATOL if hybrid else 1e-5, err_msg=name)


def test_an_unknown_fusion_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusions"):
        NumpyTFLiteBackend(open_model_file(SWIN["slide_swin_micro_fmnist.tflite"]), 1, fuse=("conv_bn",))


def _layer_norm_file(tmp_path, extra_reader: bool):
    """A lowered LayerNorm over the last axis of a (1, 4, 8) input, as converters write it; with ``extra_reader``
    one more op also reads an intermediate (``x * r``), so the chain must not be fused."""
    from tests.corpus.tflite_model import OpSpec, TensorSpec, write_tflite

    rng = np.random.default_rng(0)
    t = [TensorSpec("x", [1, 4, 8]), TensorSpec("axes", [1], "int32", np.array([2], np.int32)),
         TensorSpec("m", [1, 4]), TensorSpec("shape", [3], "int32", np.array([1, 4, 1], np.int32)),
         TensorSpec("mr", [1, 4, 1]), TensorSpec("d", [1, 4, 8]), TensorSpec("v", [1, 4]),
         TensorSpec("eps", [], data=np.array(1e-5, np.float32)), TensorSpec("ve", [1, 4]), TensorSpec("r", [1, 4]),
         TensorSpec("rm", [1, 4]), TensorSpec("c", [], data=np.array(0.0, np.float32)), TensorSpec("nb", [1, 4]),
         TensorSpec("rr", [1, 4, 1]), TensorSpec("xs", [1, 4, 8]), TensorSpec("nbr", [1, 4, 1]),
         TensorSpec("y0", [1, 4, 8]), TensorSpec("gamma", [8], data=rng.normal(1, 0.1, 8).astype(np.float32)),
         TensorSpec("y1", [1, 4, 8]), TensorSpec("beta", [8], data=rng.normal(0, 0.1, 8).astype(np.float32)),
         TensorSpec("y", [1, 4, 8]), TensorSpec("out", [1, 4, 8])]
    ops = [OpSpec("MEAN", [0, 1], [2]), OpSpec("RESHAPE", [2, 3], [4]), OpSpec("SQUARED_DIFFERENCE", [0, 4], [5]),
           OpSpec("MEAN", [5, 1], [6]), OpSpec("ADD", [6, 7], [8]), OpSpec("RSQRT", [8], [9]),
           OpSpec("MUL", [9, 2], [10]), OpSpec("SUB", [11, 10], [12]), OpSpec("RESHAPE", [9, 3], [13]),
           OpSpec("MUL", [0, 13], [14]), OpSpec("RESHAPE", [12, 3], [15]), OpSpec("ADD", [14, 15], [16]),
           OpSpec("MUL", [16, 17], [18]), OpSpec("ADD", [18, 19], [20])]
    if extra_reader:
        ops.append(OpSpec("ADD", [20, 14], [21]))
    name = "layer_norm_shared.tflite" if extra_reader else "layer_norm.tflite"
    return write_tflite(tmp_path / name, t, ops, [0], [21 if extra_reader else 20])


@pytest.mark.parametrize("extra_reader", [False, True], ids=["chain", "intermediate-read-elsewhere"])
def test_a_layer_norm_chain_is_fused_only_when_nothing_else_reads_its_intermediates(tmp_path, extra_reader) -> None:
    pytest.importorskip("ai_edge_litert")  # the test file is written with LiteRT's flatbuffer schema
    path = _layer_norm_file(tmp_path, extra_reader)
    fused = NumpyTFLiteBackend(open_model_file(path), 1)
    plain = NumpyTFLiteBackend(open_model_file(path), 1, fuse=())
    assert ("LAYER_NORM" in [s.op.op for s in fused._steps]) is not extra_reader
    x = np.random.default_rng(1).normal(0, 3, (1, 4, 8)).astype(np.float32)
    want = plain.run(x)
    np.testing.assert_allclose(fused.run(x), want, rtol=0, atol=1e-6)
    constants = {t.name: t.data for t in load_tflite_model(path).subgraphs[0].tensors if t.data is not None}
    rsqrt = 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    expected = (x - x.mean(-1, keepdims=True)) * rsqrt * constants["gamma"] + constants["beta"]
    if extra_reader:
        expected = expected + x * rsqrt
    np.testing.assert_allclose(want, expected, rtol=0, atol=1e-5)  # the file really is a LayerNorm
