"""Checks shared by everything that reads a user-given file (images, models): never blocks on a FIFO."""
from __future__ import annotations

import os
import stat
from typing import Optional, Tuple, Union

PERMISSION_DENIED = "permission denied (check the file's permissions)"


def file_problem(path: Union[str, "os.PathLike[str]"]) -> Tuple[Optional[str], int]:
    """``(problem, size)``: ``problem`` is None for a readable-looking, non-empty regular file, else a short
    phrase ("missing file ...", "is a directory", "not a regular file", "zero-byte file", ...)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing file (no such file or directory)", 0
    except PermissionError:
        return PERMISSION_DENIED, 0
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})", 0
    if stat.S_ISDIR(info.st_mode):
        return "is a directory", 0
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", 0
    if info.st_size == 0:
        return "zero-byte file", 0
    return None, info.st_size
