"""Errors raised by the slidelite runtime.

Every error carries a one-line, user-facing message that says what is wrong and what to do. The CLI
prints ``str(error)`` to stderr (no traceback) and exits with :attr:`SlideliteError.exit_code`.
"""
from __future__ import annotations


class SlideliteError(Exception):
    """Base class of every error slidelite raises on purpose.

    Attributes:
        exit_code: the process exit code the CLI uses for this error (1: an input failed, 2: usage).
    """

    exit_code: int = 1


class ImageError(SlideliteError):
    """An image could not be read or decoded (missing, corrupt, unsupported, too large)."""


class ModelError(SlideliteError):
    """A model file is missing, unreadable, not a model, truncated or fails its checksum."""


class MetadataError(ModelError):
    """A model file carries no slidelite metadata, or metadata that is malformed or inconsistent."""


class BackendUnavailableError(SlideliteError):
    """No installed inference backend can run the model; the message says which extra to install."""


class UsageError(SlideliteError):
    """An option has an invalid value (unknown backend name, threads <= 0, ...)."""

    exit_code = 2
