"""slidelite.convert: the offline converter (needs ``pip install "slidelite[convert]"``: torch, onnx, onnxruntime).

    >>> from slidelite.convert import ConversionJob, convert
    >>> result = convert(ConversionJob(model="slide_swin_micro", output=Path("micro.onnx"), int8=True, calib=Path("photos")))
    >>> print(result.report)

The pipeline steps are importable on their own (see :mod:`slidelite.convert.pipeline`).
"""
from .job import ConversionJob, ConversionResult, LoadedModel, PreprocessOverrides
from .pipeline import convert, convert_onnx, prepare, validation_set

__all__ = ["ConversionJob", "ConversionResult", "LoadedModel", "PreprocessOverrides", "convert", "convert_onnx",
           "prepare", "validation_set"]
