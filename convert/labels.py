"""Labels for the metadata: a user's labels file, the zoo label set of the model, or ``class_<i>``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from slidelite.metadata import LabelsFileError, load_labels_file, read_labels_file

from .errors import LabelsError


def zoo_label_file(label_set: str) -> Optional[Path]:
    """The bundled labels file of a zoo label set (``imagenet-1k``, ``fashion-mnist``), or None."""
    from slidelite import zoo

    path = Path(zoo.__file__).resolve().parent / "labels" / f"{label_set}.txt"
    return path if label_set and path.is_file() else None


def read_labels(path: Path, allow_duplicates: bool = False) -> List[str]:
    """Read a labels file (one label per line, UTF-8 with or without a byte-order mark), refusing empty labels
    and, unless ``allow_duplicates``, a label given twice.

    Raises:
        LabelsError: the file is missing, unreadable, empty, has an empty line or a duplicate label.
    """
    try:
        labels = load_labels_file(str(path))
    except LabelsFileError as exc:
        raise LabelsError(f"{path}: {exc}") from None
    if not allow_duplicates and labels not in bundled_label_sets():
        _refuse_duplicates(labels, path)
    return labels


def bundled_label_sets() -> List[List[str]]:
    """The zoo's bundled label sets (``imagenet-1k``, ``fashion-mnist``): their repeated names are genuine
    (ImageNet-1k has two classes named ``crane``: the bird and the machine)."""
    from slidelite import zoo

    folder = Path(zoo.__file__).resolve().parent / "labels"
    return [read_labels_file(str(path)) for path in sorted(folder.glob("*.txt"))]


def _refuse_duplicates(labels: Sequence[str], path: Path) -> None:
    first_line: Dict[str, int] = {}
    for line, label in enumerate(labels, start=1):
        if label in first_line:
            raise LabelsError(f"{path}: label {label!r} is on lines {first_line[label]} and {line}; give each class "
                              "its own label (or pass --allow-duplicate-labels if the model really has two classes "
                              "of that name)")
        first_line[label] = line


def resolve_labels(labels_path: Optional[Path], num_classes: int, label_set: str = "",
                   allow_duplicates: bool = False) -> Tuple[str, ...]:
    """The ``num_classes`` labels to embed: ``labels_path``, else the zoo's ``label_set`` when it fits, else ``class_<i>``.

    A labels file may not repeat a name unless ``allow_duplicates`` or it is one of the bundled label sets
    (ImageNet-1k has two classes named ``crane``).

    Raises:
        LabelsError: ``labels_path`` is unreadable, repeats a label or its line count is not ``num_classes``.
    """
    if labels_path is not None:
        labels = read_labels(Path(labels_path), allow_duplicates)
        if len(labels) != num_classes:
            raise LabelsError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} outputs (its "
                              f"head); give exactly one label per line for each of the {num_classes} classes")
        return tuple(labels)
    bundled = zoo_label_file(label_set)
    labels = read_labels(bundled) if bundled is not None else []
    return tuple(labels) if len(labels) == num_classes else tuple(f"class_{i}" for i in range(num_classes))
