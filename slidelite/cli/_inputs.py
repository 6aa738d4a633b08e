"""Expand the ``PATH...`` arguments of ``slidelite classify`` into image files, lazily.

Each argument is a file, a directory (searched recursively for image files by extension, hidden entries
and symlinked folders skipped), or a glob pattern the shell did not expand (``'photos/**/*.jpg'``).
Nothing is collected up front: paths are yielded as they are found, so classifying a folder of 10,000
photos starts at once and holds one directory listing at a time (its names, sorted, for a stable order).
Problems (missing path, unreadable folder, folder without images, pattern without matches) are yielded
as :class:`InputProblem` so the caller reports them and carries on.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Tuple, Union

# Image formats looked for inside folders (those this Pillow build can open are kept).
_COMMON_IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi", ".avif", ".jp2", ".j2k", ".heic", ".heif",
)
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class InputProblem:
    """An argument that yields no image: the path as the user wrote it and what is wrong."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


InputItem = Union[str, InputProblem]


def image_suffixes() -> Tuple[str, ...]:
    """File extensions treated as images when searching folders (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    openable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return tuple(ext for ext in _COMMON_IMAGE_SUFFIXES if ext in openable)


def iter_inputs(arguments: Iterable[str]) -> Iterator[InputItem]:
    """Yield, for each argument in order, its image paths (``str``) or an :class:`InputProblem`."""
    suffixes: Tuple[str, ...] = ()
    for argument in arguments:
        if os.path.isdir(argument):
            suffixes = suffixes or image_suffixes()
            yield from _folder(argument, suffixes)
        elif os.path.lexists(argument):
            yield argument  # any file given explicitly is tried, whatever its name
        elif any(char in argument for char in _GLOB_CHARS):
            suffixes = suffixes or image_suffixes()
            yield from _pattern(argument, suffixes)
        else:
            yield InputProblem(argument, "no such file or directory")


def _pattern(pattern: str, suffixes: Tuple[str, ...]) -> Iterator[InputItem]:
    matched = False
    for match in glob.iglob(pattern, recursive=True):
        matched = True
        if os.path.isdir(match):
            yield from _folder(match, suffixes)
        else:
            yield match
    if not matched:
        yield InputProblem(pattern, "no files match this pattern")


def _folder(folder: str, suffixes: Tuple[str, ...]) -> Iterator[InputItem]:
    found = False  # an image, or a problem already reported for this folder
    for item in _walk(folder, suffixes):
        found = True
        yield item
    if not found:
        yield InputProblem(folder, f"no images found in this directory (looked for {', '.join(suffixes[:6])}, ...)")


def _walk(folder: str, suffixes: Tuple[str, ...]) -> Iterator[InputItem]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        yield InputProblem(folder, f"cannot read directory ({exc.strerror or exc})")
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, suffixes)
        elif os.path.splitext(entry.name)[1].lower() in suffixes:
            yield entry.path
