"""Which backends can run a model file as it is, and which one ``--backend`` would pick (``slidelite info``).

A backend's verdict on a file is checked the way the backend itself checks it, never from a separate op
list: the format first (cheap), then whether its engine is installed and imports, then a real load. The
load is each backend's own check of every op, attribute and dtype in the file: the numpy backend parses
the graph and builds its execution plan (refusing any op or attribute its kernels lack), onnxruntime and
LiteRT create their session / interpreter.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from ..errors import ModelError
from . import BACKEND_NAMES, BACKENDS, FAILS_TO_IMPORT, NOT_INSTALLED, candidates, try_load
from .base import Backend

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile


class Verdict(NamedTuple):
    """One backend's answer for one model file.

    Attributes:
        backend: the backend name.
        can_run: True when the backend loaded the file.
        reason: why not (format, engine not installed or broken, the backend's own refusal), or what loaded it.
    """

    backend: str
    can_run: bool
    reason: str


class Choice(NamedTuple):
    """What ``--backend NAME`` does with a file, and every backend's verdict.

    Attributes:
        verdicts: one per registered backend, in :data:`~slidelite.backends.BACKEND_NAMES` order.
        chosen: the backend ``NAME`` picks (installed, imports), or None when none is usable.
        why: one sentence on why ``chosen`` is picked (or why none is).
        backend: ``chosen`` loaded (the caller closes it), or None when it refuses the file.
    """

    verdicts: Tuple[Verdict, ...]
    chosen: Optional[str]
    why: str
    backend: Optional[Backend]


def check(model_file: "ModelFile", name: str) -> Tuple[Verdict, Optional[Backend]]:
    """Backend ``name``'s verdict on ``model_file`` and, when it can run it, the loaded backend (1 thread)."""
    formats = BACKENDS[name].formats
    if model_file.format not in formats:
        return Verdict(name, False, f"runs {' and '.join(formats)} files only"), None
    try:
        backend, problem = try_load(model_file, name, threads=1)
    except ModelError as exc:
        return Verdict(name, False, _without_path(str(exc), str(model_file.path))), None
    if backend is None:
        return Verdict(name, False, problem), None
    return Verdict(name, True, f"loads the file ({name} {backend.version})"), backend


def choose(model_file: "ModelFile", name: str = "auto") -> Choice:
    """Every backend's verdict on ``model_file`` and the one ``name`` picks, following
    :func:`~slidelite.backends.create_backend`'s rule (``auto``: the first installed backend that imports,
    in preference order).

    Raises:
        UsageError: unknown backend name, or a backend that cannot run this format.
    """
    tried = candidates(model_file, name)
    verdicts: List[Verdict] = []
    skipped: List[str] = []
    chosen: Optional[str] = None
    kept: Optional[Backend] = None
    for backend_name in BACKEND_NAMES:  # tried keeps this order, so the first usable one is met first
        verdict, backend = check(model_file, backend_name)
        verdicts.append(verdict)
        if chosen is None and backend_name in tried:
            if verdict.reason.startswith((NOT_INSTALLED, FAILS_TO_IMPORT)):
                skipped.append(f"{backend_name} {verdict.reason}")
            else:
                chosen, kept = backend_name, backend
                continue
        if backend is not None:
            backend.close()
    if name != "auto":
        why = f"asked for with --backend {name}"
    else:
        why = f"auto: the first usable of {', '.join(tried)}" + "".join(f"; {s}" for s in skipped)
    return Choice(tuple(verdicts), chosen, why, kept)


def _without_path(message: str, path: str) -> str:
    """``message`` without the leading model path that every load error starts with (the table names the file)."""
    if message.startswith(path):
        message = message[len(path):].lstrip(": ")
    return message
