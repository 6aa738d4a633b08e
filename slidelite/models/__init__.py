"""Models shipped inside the wheel: the registry read from ``manifest.json``, with sha256 verification.

``manifest.json`` (next to this file) is ``{"manifest_version": 1, "models": [entry, ...]}``; each entry
describes one shipped file::

    {"name": "efficientnet_lite0", "file": "efficientnet_lite0.int8.tflite", "format": "tflite",
     "precision": "int8", "sha256": "...", "size": 5400000, "default": true,
     "architecture": "efficientnet_lite0_imagenet", "description": "...",
     "accuracy": {"dataset": "...", "top1": 0.75}, "license": "Apache-2.0"}

Resolution rules of :func:`resolve_model` (used by :class:`slidelite.Classifier` and every CLI command):

- ``None`` -> the default model (the entries with ``"default": true``);
- an existing file path -> that file (verified against the manifest when it is a shipped file);
- a shipped name -> its file. Several entries may share one name in different formats (the same model as
  ``.tflite`` and ``.onnx``): the first format of :data:`FORMAT_PREFERENCE` that an installed backend can
  run wins (with ``backend`` given: the formats that backend runs), so ``efficientnet_lite0`` is the
  ``.tflite`` file when LiteRT is installed, else the ``.onnx``;
- a shipped file name (``efficientnet_lite0.onnx``) -> exactly that file.

Shipped files are verified by sha256 before use (once per process and file state); a tampered or
truncated file is refused with a :class:`~slidelite.errors.ModelError`. Tests point the registry at a
temporary folder with the ``models_dir`` argument or the ``SLIDELITE_MODELS_DIR`` environment variable.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import ModelError

MODELS_DIR_ENV = "SLIDELITE_MODELS_DIR"
MANIFEST_NAME = "manifest.json"
MODEL_SUFFIXES = (".onnx", ".tflite")
#: Formats in the order a shipped name resolves to when several are shipped and runnable.
FORMAT_PREFERENCE = ("tflite", "onnx")
NO_DEFAULT_MESSAGE = "no default model is installed: pass --model FILE (convert one with `slidelite convert`)"

#: Architectures registered in ``slidelite.zoo`` (kept here so ``slidelite models`` never imports torch;
#: ``tests/test_cli_models.py`` asserts it equals ``slidelite.zoo.list_models()``).
ZOO_ARCHITECTURES: Tuple[str, ...] = (
    "efficientnet_lite0_imagenet",
    "pvt_small",
    "pvt_tiny",
    "pvtv2_b1",
    "pvtv2_b2",
    "slide_pvt_small",
    "slide_pvt_tiny",
    "slide_pvtv2_b1",
    "slide_pvtv2_b2",
    "slide_swin_base",
    "slide_swin_micro",
    "slide_swin_small",
    "slide_swin_tiny",
    "slide_swin_tiny_im2col",
    "swin_tiny_window",
)

_REQUIRED_FIELDS = ("name", "file", "format", "precision", "sha256", "size")
# (path, size, mtime_ns) -> sha256 of the file in that state
_VERIFIED: Dict[Tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class ShippedModel:
    """One model file shipped in the wheel, as described by the manifest."""

    name: str
    file: str
    format: str
    precision: str
    sha256: str
    size: int
    path: Path
    default: bool = False
    architecture: str = ""
    description: str = ""
    accuracy: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (used by ``slidelite models --json``)."""
        return {
            "name": self.name, "file": self.file, "path": str(self.path), "format": self.format,
            "precision": self.precision, "size": self.size, "sha256": self.sha256, "default": self.default,
            "architecture": self.architecture, "description": self.description,
            "accuracy": dict(self.accuracy), "license": self.license,
        }


def models_dir(override: "Optional[os.PathLike[str] | str]" = None) -> Path:
    """The folder holding ``manifest.json`` and the shipped files: ``override``, else the
    ``SLIDELITE_MODELS_DIR`` environment variable, else this package's folder."""
    if override is not None:
        return Path(override)
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent


def list_shipped(directory: "Optional[os.PathLike[str] | str]" = None) -> List[ShippedModel]:
    """The shipped models in manifest order.

    Raises:
        ModelError: when the manifest is unreadable or malformed.
    """
    folder = models_dir(directory)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return []
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest}: unreadable model manifest ({exc}); reinstall slidelite") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ModelError(f"{manifest}: model manifest has no 'models' list; reinstall slidelite")
    return [_entry(raw, folder, manifest) for raw in entries]


def _entry(raw: Any, folder: Path, manifest: Path) -> ShippedModel:
    if not isinstance(raw, dict) or any(key not in raw for key in _REQUIRED_FIELDS):
        raise ModelError(f"{manifest}: a model entry lacks one of {', '.join(_REQUIRED_FIELDS)}; reinstall slidelite")
    return ShippedModel(
        name=str(raw["name"]), file=str(raw["file"]), format=str(raw["format"]), precision=str(raw["precision"]),
        sha256=str(raw["sha256"]).lower(), size=int(raw["size"]), path=folder / str(raw["file"]),
        default=bool(raw.get("default", False)), architecture=str(raw.get("architecture", "")),
        description=str(raw.get("description", "")), accuracy=dict(raw.get("accuracy") or {}),
        license=str(raw.get("license", "")),
    )


def sha256_of(path: "os.PathLike[str] | str") -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: "os.PathLike[str] | str") -> str:
    """sha256 of ``path``, computed once per process for each (size, mtime) state of the file."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_of(path)
    return _VERIFIED[key]


def verify(model: ShippedModel) -> Path:
    """Return the path of ``model`` after checking that its file exists and its sha256 matches the manifest.

    Raises:
        ModelError: the file is missing, or it is tampered with or truncated (sha256 mismatch).
    """
    if not model.path.is_file():
        raise ModelError(f"{model.path}: shipped model file is missing: the installation is incomplete; "
                         "reinstall slidelite")
    got = file_sha256(model.path)
    if got != model.sha256:
        raise ModelError(f"{model.path}: sha256 mismatch (expected {model.sha256}, got {got}): "
                         "the installed file is corrupt; reinstall slidelite")
    return model.path


def find_shipped(name: Optional[str], backend: str = "auto",
                 directory: "Optional[os.PathLike[str] | str]" = None) -> Optional[ShippedModel]:
    """The shipped model a name (or shipped file name, or None for the default) selects, without verifying it.

    Args:
        name: a shipped name, a shipped file name, or None for the default model.
        backend: the backend that will run the model (``auto``: any installed one); it decides which
            formats can be chosen (see :func:`runnable_formats`).
        directory: the registry folder (see :func:`models_dir`).

    Returns:
        The entry, or None when nothing matches (no such name, or no default installed).
    """
    shipped = list_shipped(directory)
    if name is None:
        candidates = [m for m in shipped if m.default]
    else:
        candidates = [m for m in shipped if m.file == name] or [m for m in shipped if m.name == name]
    if not candidates:
        return None
    for fmt in runnable_formats(backend):
        for model in candidates:
            if model.format == fmt:
                return model
    return candidates[0]


def shipped_for_path(path: "os.PathLike[str] | str",
                     directory: "Optional[os.PathLike[str] | str]" = None) -> Optional[ShippedModel]:
    """The manifest entry of a file when ``path`` is one of the shipped files, else None."""
    target = Path(path).resolve()
    return next((m for m in list_shipped(directory) if m.path.resolve() == target), None)


def resolve_model(name: "Optional[os.PathLike[str] | str]" = None, backend: str = "auto",
                  directory: "Optional[os.PathLike[str] | str]" = None, verify_checksum: bool = True) -> Path:
    """Turn ``--model NAME|FILE`` (or None for the default) into a model file path.

    An existing file wins over a shipped name; shipped files are verified by sha256 (see :func:`verify`).

    Args:
        name: a model file path, a shipped name or shipped file name, or None for the default model.
        backend: the backend that will run the model (``auto``: any installed one); picks the format
            when a shipped name exists in several formats.
        directory: the registry folder (see :func:`models_dir`).
        verify_checksum: check the sha256 of shipped files.

    Raises:
        ModelError: no default installed, unknown name, missing file, or a shipped file failing its checksum.
    """
    if name is not None and Path(name).is_file():
        entry = shipped_for_path(name, directory)
        if entry is not None and verify_checksum:
            verify(entry)
        return Path(name)
    text = None if name is None else os.fspath(name)
    entry = find_shipped(text, backend, directory)
    if entry is None:
        raise ModelError(_not_found_message(text, directory))
    return verify(entry) if verify_checksum else entry.path


def _not_found_message(name: Optional[str], directory: "Optional[os.PathLike[str] | str]") -> str:
    if name is None:
        return NO_DEFAULT_MESSAGE
    if Path(name).exists():
        return f"{name}: not a model file (it is a directory or special file): pass an .onnx or .tflite file"
    if name.lower().endswith(MODEL_SUFFIXES) or os.sep in name or "/" in name:
        return f"{name}: model file not found: check the path"
    names = sorted({m.name for m in list_shipped(directory)})
    shipped = f"shipped models: {', '.join(names)}" if names else "no models are shipped"
    return f"unknown model '{name}': not a file and not a shipped model ({shipped}); see `slidelite models`"


def runnable_formats(backend: str = "auto") -> Tuple[str, ...]:
    """The model formats, in :data:`FORMAT_PREFERENCE` order, that ``backend`` runs (``auto``: that some
    installed backend runs). An unknown backend name runs nothing here; creating it reports the error."""
    from .. import backends  # lazy: availability is probed without importing any engine

    if backend == "auto":
        return tuple(fmt for fmt in FORMAT_PREFERENCE if backends.available_backends(fmt))
    spec = backends.BACKENDS.get(backend)
    return tuple(fmt for fmt in FORMAT_PREFERENCE if spec and fmt in spec.formats)
