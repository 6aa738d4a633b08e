"""The numpy backend's load-time fusions on ``.tflite`` files change the plan, not the answer.

Each fusion (sibling depthwise convolutions, lowered LayerNorm, lowered Slide attention) is switched on alone
and compared with the plan without any fusion on the shipped Slide-Swin files and real photos: the fused plan
has fewer steps, contains the fused kernel, and its scores equal the unfused ones within 1e-6 (float file;
the dynamic-int8 file quantizes activations per row, so a last-bit difference may move one quantization step:
same top-1 and within that file's documented LiteRT tolerance there). No TFLite engine is needed.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from slidelite import models
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
        np.testing.assert_allclose(got, want, rtol=0, atol=HYBRID_ATOL if hybrid else 1e-6, err_msg=name)


def test_all_fusions_together_keep_the_scores_and_cut_the_steps() -> None:
    path = SWIN["slide_swin_micro_fmnist.tflite"]
    plain = NumpyTFLiteBackend(open_model_file(path), 1, fuse=())
    fused = NumpyTFLiteBackend(open_model_file(path), 1)
    assert len(fused._steps) * 3 < len(plain._steps)
    for name, tensor in photos(path).items():
        np.testing.assert_allclose(fused.run(tensor), plain.run(tensor), rtol=0, atol=1e-6, err_msg=name)


def test_an_unknown_fusion_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusions"):
        NumpyTFLiteBackend(open_model_file(SWIN["slide_swin_micro_fmnist.tflite"]), 1, fuse=("conv_bn",))
