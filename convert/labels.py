"""Labels for the metadata: a user's labels file, the zoo label set of the model, or ``class_<i>``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from slidelite.metadata import LabelsFileError, load_labels_file

from .errors import LabelsError


def zoo_label_file(label_set: str) -> Optional[Path]:
    """The bundled labels file of a zoo label set (``imagenet-1k``, ``fashion-mnist``), or None."""
    from slidelite import zoo

    path = Path(zoo.__file__).resolve().parent / "labels" / f"{label_set}.txt"
    return path if label_set and path.is_file() else None


def read_labels(path: Path) -> List[str]:
    """Read a labels file (one label per line), refusing empty labels.

    Raises:
        LabelsError: the file is missing, unreadable, empty or has an empty line.
    """
    try:
        return load_labels_file(str(path))
    except LabelsFileError as exc:
        raise LabelsError(f"{path}: {exc}") from None


def resolve_labels(labels_path: Optional[Path], num_classes: int, label_set: str = "") -> Tuple[str, ...]:
    """The ``num_classes`` labels to embed: ``labels_path``, else the zoo's ``label_set`` when it fits, else ``class_<i>``.

    Raises:
        LabelsError: ``labels_path`` is unreadable or its line count is not ``num_classes``.
    """
    if labels_path is not None:
        labels = read_labels(Path(labels_path))
        if len(labels) != num_classes:
            raise LabelsError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} outputs; "
                              f"give exactly one label per line for each of the {num_classes} classes")
        return tuple(labels)
    bundled = zoo_label_file(label_set)
    labels = read_labels(bundled) if bundled is not None else []
    return tuple(labels) if len(labels) == num_classes else tuple(f"class_{i}" for i in range(num_classes))
