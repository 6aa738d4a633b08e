"""Step 5 (content): build the runtime metadata document (:class:`slidelite.metadata.ModelMetadata`) of a converted model."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from slidelite import __version__
from slidelite.metadata import InputSpec, ModelMetadata, OutputSpec, Provenance, Quantization

from .job import LoadedModel


def build_metadata(loaded: LoadedModel, labels: Sequence[str], *, precision: str = "fp32", name: Optional[str] = None,
                   input_name: str = "input", output_name: str = "logits", layout: str = "NCHW",
                   input_dtype: str = "float32", input_quantization: Optional[Quantization] = None,
                   output_quantization: Optional[Quantization] = None, source: str = "",
                   metrics: Optional[Mapping[str, Any]] = None, description: str = "") -> ModelMetadata:
    """The metadata of ``loaded`` exported with the given tensor names/layout/precision.

    Provenance records the architecture, the checkpoint's sha256, the converter version and the source.
    """
    height, width = loaded.input_size
    return ModelMetadata(
        name=name or loaded.architecture,
        labels=tuple(labels),
        input=InputSpec(name=input_name, height=height, width=width, layout=layout, dtype=input_dtype,
                        quantization=input_quantization),
        preprocess=loaded.preprocess,
        output=OutputSpec(name=output_name, kind="logits", quantization=output_quantization),
        precision=precision,
        description=description or f"{loaded.architecture} converted by slidelite {__version__}",
        provenance=Provenance(architecture=loaded.architecture, checkpoint_sha256=loaded.checkpoint_sha256,
                              converter_version=f"slidelite {__version__}", source=source or loaded.source,
                              license=loaded.license),
        metrics=dict(metrics or {}),
    )
