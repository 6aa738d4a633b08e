"""Calibration / validation data: an image folder read through the runtime's own preprocessing
(:func:`slidelite.preprocess.prepare_input`: one implementation, not two), exposed as an array set and as
an onnxruntime-quantization ``CalibrationDataReader`` (``get_next()`` / ``rewind()``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from slidelite.errors import SlideliteError
from slidelite.metadata import ModelMetadata

from .errors import CalibrationError


@dataclass
class CalibrationSet:
    """Preprocessed images (N, C, H, W) float32 in the model's layout, their files, and the files skipped."""

    inputs: np.ndarray
    paths: List[Path]
    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, batch: int = 1) -> Iterator[np.ndarray]:
        """Yield the inputs ``batch`` images at a time (the last batch may be smaller)."""
        for start in range(0, len(self.inputs), batch):
            yield self.inputs[start:start + batch]

    def skipped_summary(self) -> str:
        """One line naming how many files were skipped and the first one, or '' when none."""
        if not self.skipped:
            return ""
        path, why = self.skipped[0]
        return f"skipped {len(self.skipped)} calibration file(s) that did not decode as images (first: {path.name}: {why})"


def image_files(folder: Path) -> List[Path]:
    """Image files (by the extensions Pillow knows) under ``folder``, recursively, sorted.

    Raises:
        CalibrationError: the folder is missing, not a folder, or holds no image file.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise CalibrationError(f"calibration folder {folder} {what}; give --calib a folder of images")
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                   and not p.name.startswith("."))
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no image files; add some photos like the ones "
                               "the model will see (32 or more is best)")
    return files


def _spread(files: Sequence[Path], limit: Optional[int]) -> List[Path]:
    """At most ``limit`` files, evenly spread over the sorted list (deterministic)."""
    if limit is None or len(files) <= limit:
        return list(files)
    picks = np.linspace(0, len(files) - 1, limit).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def load_calibration_set(folder: Path, metadata: ModelMetadata, max_images: Optional[int] = None,
                         progress: bool = False) -> CalibrationSet:
    """Decode and preprocess the images of ``folder`` exactly as the runtime will for ``metadata``.

    Files that fail to decode are skipped and counted (:attr:`CalibrationSet.skipped`).

    Raises:
        CalibrationError: no usable image.
    """
    from slidelite.preprocess import prepare_input
    from tqdm import tqdm

    files = _spread(image_files(folder), max_images)
    tensors: List[np.ndarray] = []
    used: List[Path] = []
    skipped: List[Tuple[Path, str]] = []
    for path in tqdm(files, desc="calibration images", unit="img", disable=not progress, leave=False):
        try:
            array = np.asarray(prepare_input(str(path), metadata), dtype=np.float32)
        except SlideliteError as exc:
            skipped.append((path, str(exc)))
            continue
        tensors.append(array[None] if array.ndim == 3 else array)
        used.append(path)
    if not tensors:
        raise CalibrationError(f"calibration folder {folder}: none of its {len(files)} image files decoded "
                               f"(first error: {skipped[0][1]})")
    return CalibrationSet(np.concatenate(tensors, axis=0), used, skipped)


def _reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class ImageFolderReader(_reader_base()):  # type: ignore[misc]
    """onnxruntime-quantization data reader over a :class:`CalibrationSet`: one ``{input_name: batch}`` per call.

    Example:
        >>> reader = ImageFolderReader(load_calibration_set(folder, metadata), "input")
        >>> quantize_static(fp32, int8, reader)
    """

    def __init__(self, data: CalibrationSet, input_name: str, batch: int = 1) -> None:
        self.data = data
        self.input_name = input_name
        self.batch = batch
        self._iter: Iterator[np.ndarray] = data.batches(batch)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        """The next feed dict, or None when the set is exhausted."""
        chunk = next(self._iter, None)
        return None if chunk is None else {self.input_name: chunk}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._iter = self.data.batches(self.batch)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch)
