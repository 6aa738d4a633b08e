"""Step 5 (TFLite): embed standard TFLite Metadata plus the slidelite JSON into a ``.tflite`` file.

The TFLite Metadata (ImageClassifier style: name, description, version, author, licence; the input's
image properties and scalar normalization; the labels as the output's ``TENSOR_AXIS_LABELS`` file) is
written by tflite-support's maintained metadata writer; the slidelite document goes in as the extra
model-level associated file :data:`slidelite.metadata.TFLITE_METADATA_FILE` that the runtime reads.

tflite-support needs numpy<2 and protobuf<4, which cannot share an environment with torch 2.13's
numpy 2 and onnx, so the writer (:mod:`slidelite.convert.tflite_metadata_writer`, a standalone script)
runs in a subprocess with the first Python found of (:func:`writer_python`): the one given
(``--tflite-support-python``), ``$SLIDELITE_TFLITE_SUPPORT_PYTHON``, this Python when it has tflite-support,
``.venv-tflite`` beside the active environment (``scripts/setup_tflite.sh`` makes it beside ``.venv``; found
for editable and regular installs alike), in the source checkout of an editable install, in the current folder.
The converter checks it before the export starts.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from slidelite import __version__
from slidelite.metadata import TFLITE_METADATA_FILE, ModelMetadata

from .errors import ConversionError

WRITER_SCRIPT = Path(__file__).resolve().parent / "tflite_metadata_writer.py"
ENV_PYTHON = "SLIDELITE_TFLITE_SUPPORT_PYTHON"
VENV_NAME = ".venv-tflite"
WRITER_TIMEOUT_S = 600
PROBE_TIMEOUT_S = 60
SETUP_COMMAND = ('scripts/setup_tflite.sh (in a source checkout), or: python3 -m venv {venv} && '
                 '{venv}/bin/pip install "numpy==1.26.4" "tflite-support==0.4.4"')


def venv_candidates() -> List[Path]:
    """Where ``scripts/setup_tflite.sh`` puts the writer's environment, seen from this install: beside the
    active environment (``<project>/.venv`` -> ``<project>/.venv-tflite``), in the source checkout of an
    editable install, in the current folder."""
    roots = [Path(sys.prefix).parent, Path(__file__).resolve().parent.parent, Path.cwd()]
    pythons = [root / VENV_NAME / folder / name for root in roots
               for folder, name in (("bin", "python"), ("Scripts", "python.exe"))]
    return list(dict.fromkeys(pythons))


def writer_python(given: Optional[Path] = None) -> str:
    """The Python that runs the tflite-support metadata writer (see the module docstring for the order).

    Raises:
        ConversionError: none is given or found, or the one given or found lacks tflite-support (one line with
            the command that sets it up).
    """
    configured = str(given) if given is not None else os.environ.get(ENV_PYTHON)
    origin = "--tflite-support-python" if given is not None else f"${ENV_PYTHON}"
    if configured:
        if not Path(configured).is_file():
            raise ConversionError(f"{origin} {configured} does not exist; point it at a Python with tflite-support")
        return _checked(configured, origin)
    if importlib.util.find_spec("tflite_support") is not None:
        return sys.executable
    found = next((path for path in venv_candidates() if path.is_file()), None)
    if found is not None:
        return _checked(str(found), str(found.parent.parent))
    venv = Path(sys.prefix).parent / VENV_NAME
    raise ConversionError("writing TFLite Metadata needs tflite-support (numpy<2) in its own environment, and none "
                          f"was found (looked for {venv}); create it: {SETUP_COMMAND.format(venv=venv)}; or pass "
                          "--tflite-support-python PYTHON")


def _checked(python: str, origin: str) -> str:
    """``python`` if it can import tflite-support (checked without importing it: a spec lookup), else one line."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tflite_support') is None)"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionError(f"{origin}: {python} does not run ({exc}); re-create it: "
                              f"{SETUP_COMMAND.format(venv=Path(python).parent.parent)}") from None
    if proc.returncode != 0:
        raise ConversionError(f"{origin}: {python} has no tflite-support; install it: {python} -m pip install "
                              '"numpy==1.26.4" "tflite-support==0.4.4" (or run scripts/setup_tflite.sh)')
    return python


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
