"""Step 5 (TFLite): embed standard TFLite Metadata plus the slidelite JSON into a ``.tflite`` file.

The TFLite Metadata (ImageClassifier style: name, description, version, author, licence; the input's
image properties and scalar normalization; the labels as the output's ``TENSOR_AXIS_LABELS`` file) is
written by tflite-support's maintained metadata writer; the slidelite document goes in as the extra
model-level associated file :data:`slidelite.metadata.TFLITE_METADATA_FILE` that the runtime reads.

tflite-support needs numpy<2 and protobuf<4, which cannot share an environment with torch 2.13's
numpy 2 and onnx, so the writer (:mod:`slidelite.convert.tflite_metadata_writer`, a standalone script)
runs in a subprocess with the first Python found of: ``$SLIDELITE_TFLITE_SUPPORT_PYTHON``, this Python
when it can import tflite-support, the repository's ``.venv-tflite`` (``scripts/setup_tflite.sh``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from slidelite import __version__
from slidelite.metadata import TFLITE_METADATA_FILE, ModelMetadata

from .errors import ConversionError

WRITER_SCRIPT = Path(__file__).resolve().parent / "tflite_metadata_writer.py"
ENV_PYTHON = "SLIDELITE_TFLITE_SUPPORT_PYTHON"
REPO_VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venv-tflite" / "bin" / "python"
WRITER_TIMEOUT_S = 600


def writer_python() -> str:
    """The Python that runs the tflite-support metadata writer.

    Raises:
        ConversionError: none is configured or found (says how to set one up).
    """
    configured = os.environ.get(ENV_PYTHON)
    if configured:
        if not Path(configured).is_file():
            raise ConversionError(f"${ENV_PYTHON} = {configured} does not exist; point it at a Python with tflite-support")
        return configured
    if importlib.util.find_spec("tflite_support") is not None:
        return sys.executable
    if REPO_VENV_PYTHON.is_file():
        return str(REPO_VENV_PYTHON)
    raise ConversionError("writing TFLite Metadata needs tflite-support (numpy<2), which is not installed: run "
                          f"scripts/setup_tflite.sh (creates .venv-tflite) or set ${ENV_PYTHON} to a Python "
                          "with tflite-support==0.4.4")


def embed_tflite_metadata(model: Path, destination: Path, metadata: ModelMetadata, python: Optional[str] = None) -> Path:
    """Write ``model`` plus TFLite Metadata and the slidelite JSON of ``metadata`` to ``destination``.

    Raises:
        ConversionError: the writer failed (its one-line message included).
    """
    with tempfile.TemporaryDirectory(prefix="slidelite-tflite-md-") as work:
        folder = Path(work)
        labels = folder / "labels.txt"
        labels.write_text("\n".join(metadata.labels) + "\n", encoding="utf-8")
        document = folder / TFLITE_METADATA_FILE
        document.write_text(metadata.to_json(), encoding="utf-8")
        request = folder / "request.json"
        request.write_text(json.dumps({
            "model": str(model), "output": str(destination), "name": metadata.name,
            "description": metadata.description, "version": f"slidelite {__version__}, metadata schema "
                                                               f"{metadata.schema_version}",
            "author": "slidelite", "license": metadata.provenance.license or "see the model's source",
            "mean": [0.0], "std": [1.0], "color_space": "RGB",
            "labels_file": str(labels), "extra_files": [str(document)],
        }), encoding="utf-8")
        try:
            proc = subprocess.run([python or writer_python(), str(WRITER_SCRIPT), str(request)], capture_output=True,
                                  text=True, timeout=WRITER_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConversionError(f"the TFLite Metadata writer could not run ({exc})") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ConversionError(f"{destination}: {lines[-1] if lines else 'the TFLite Metadata writer failed'}")
    return Path(destination)
