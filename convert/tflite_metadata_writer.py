"""Write standard TFLite Metadata (ImageClassifier style) into a ``.tflite`` file with tflite-support's writer.

Run as a script, by path, with a Python that has ``tflite-support`` (it needs numpy<2 and protobuf<4, so
it usually lives in ``.venv-tflite``, made by ``scripts/setup_tflite.sh``); it imports nothing from slidelite
and nothing but the standard library and tflite-support::

    .venv-tflite/bin/python convert/tflite_metadata_writer.py request.json

``request.json`` holds: ``model`` (input .tflite), ``output``, ``name``, ``description``, ``version``,
``author``, ``license``, ``mean``/``std`` (ONE value each: what MediaPipe and the Task Library accept),
``color_space`` (``RGB`` or ``GRAYSCALE``), ``labels_file`` (one label per line; becomes the output tensor's
``TENSOR_AXIS_LABELS`` file) and ``extra_files`` (model-level associated files, e.g. the slidelite JSON).
On failure it prints one line to stderr and exits 1.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

INPUT_DESCRIPTION = "Input image: NHWC pixels 0..255, normalization is part of the graph."
OUTPUT_DESCRIPTION = "Class logits (apply softmax for probabilities), one per label."


def write_metadata(request: Dict[str, Any]) -> None:
    """Populate ``request['model']`` with metadata and associated files into ``request['output']``."""
    from tflite_support import metadata_schema_py_generated as fb
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer, writer_utils

    with open(request["model"], "rb") as handle:
        model = bytearray(handle.read())
    general = metadata_info.GeneralMd(name=request["name"], version=request["version"],
                                      description=request["description"], author=request["author"],
                                      licenses=request["license"])
    color = getattr(fb.ColorSpaceType, request["color_space"])
    input_md = metadata_info.InputImageTensorMd(
        name="image", description=INPUT_DESCRIPTION, norm_mean=list(request["mean"]), norm_std=list(request["std"]),
        color_space_type=color, tensor_type=writer_utils.get_input_tensor_types(model)[0])
    output_md = metadata_info.ClassificationTensorMd(
        name="logits", description=OUTPUT_DESCRIPTION,
        label_files=[metadata_info.LabelFileMd(file_path=request["labels_file"])],
        tensor_type=writer_utils.get_output_tensor_types(model)[0])
    model_metadata = general.create_metadata()
    model_metadata.associatedFiles = [_described_file(fb, path) for path in request["extra_files"]]
    extra: List[str] = list(request["extra_files"])
    output_metadata = output_md.create_metadata()
    output_metadata.stats = None  # the writer assumes probabilities in 0..1; these are logits
    writer = metadata_writer.MetadataWriter.create_from_metadata(
        model, model_metadata, [input_md.create_metadata()], [output_metadata],
        associated_files=[request["labels_file"], *extra])
    with open(request["output"], "wb") as handle:
        handle.write(writer.populate())


def _described_file(fb: Any, path: str) -> Any:
    """A model-level associated file entry (type DESCRIPTIONS) for ``path``."""
    entry = fb.AssociatedFileT()
    entry.name = os.path.basename(path)
    entry.description = "slidelite runtime metadata (labels, preprocessing, provenance); see docs/model-format.md"
    entry.type = fb.AssociatedFileType.DESCRIPTIONS
    return entry


def main(argv: List[str]) -> int:
    """Script entry point: ``tflite_metadata_writer.py REQUEST.json``."""
    if len(argv) != 2:
        print("usage: tflite_metadata_writer.py REQUEST.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as handle:
            write_metadata(json.load(handle))
    except ImportError as exc:
        print(f"tflite-support is not installed in {sys.executable} ({exc})", file=sys.stderr)
        return 1
    except Exception as exc:  # the writer raises ValueError/RuntimeError/...; report one line
        lines = str(exc).strip().splitlines()
        print(f"TFLite Metadata writer failed: {lines[0] if lines else type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
