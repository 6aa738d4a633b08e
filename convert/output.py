"""Output-file safety: refuse collisions and unwritable paths up front, and write atomically
(a temp file in the destination folder, renamed into place only when everything passed)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Iterator, Mapping, Optional

from .errors import OutputPathError


def check_output_path(path: Path, overwrite: bool, inputs: Mapping[str, Optional[Path]] = MappingProxyType({})) -> None:
    """Raise :class:`OutputPathError` when ``path`` is one of the ``inputs`` (``{"--checkpoint": path}``), exists
    (and not ``overwrite``) or its folder is not writable."""
    path = Path(path)
    for option, given in inputs.items():
        if given is not None and Path(given).resolve() == path.resolve():
            raise OutputPathError(f"-o {path} is the {option} file; choose another output name")
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; give -o a file name such as {path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise OutputPathError(f"{path} already exists; pass --overwrite to replace it or choose another -o")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {parent} does not exist; create it first")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}; choose a writable -o") from None
    os.close(handle)
    os.unlink(probe)


@contextlib.contextmanager
def staged_output(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on normal exit rename it onto ``path``, on error delete it.

    No partial output file is ever left behind: the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent if str(path.parent) else ".")
    os.close(handle)
    temp_path = Path(temp)
    try:
        yield temp_path
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, path)
    finally:
        if temp_path.exists():
            temp_path.unlink()
