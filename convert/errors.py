"""Errors raised by the converter. Each is one user-facing line; the CLI prints it and exits with its code."""
from __future__ import annotations

from typing import Optional

from slidelite.errors import SlideliteError, UsageError


def raise_if_interrupted(exc: Optional[BaseException]) -> None:
    """Raise :class:`KeyboardInterrupt` when ``exc`` arose while a Ctrl-C was being handled (one is in its chain
    of causes and contexts), so that a catch-all around a third-party call does not turn Ctrl-C into a failure.

    The case seen: Ctrl-C during torch's lazy ``import torch._dynamo`` inside ``torch.onnx.export`` leaves the
    module half-initialized; the exporter's ``except torch._dynamo.exc.UserError`` clause then raises
    ``AttributeError: module 'torch._dynamo' has no attribute 'exc'`` (with the KeyboardInterrupt as its context),
    which the exporter reports as an export failure.
    """
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]


class ConversionError(SlideliteError):
    """A conversion could not be completed; nothing was written."""


class ModelSpecError(UsageError):
    """``--model`` names no zoo model or importable ``module:attr`` factory (exit code 2)."""


class ModelBuildError(ConversionError):
    """The user's model code failed: importing ``module:attr`` raised, the factory raised, or it gave no
    ``torch.nn.Module`` (exit code 1)."""


class CheckpointLoadError(ConversionError):
    """A checkpoint is missing, unsafe, or does not fit the architecture."""


class LabelsError(ConversionError):
    """The labels file is missing, unreadable or has the wrong number of lines."""


class CalibrationError(ConversionError):
    """The calibration folder is missing or holds no decodable image."""


class OutputPathError(ConversionError):
    """The output path exists (without ``--overwrite``) or cannot be written."""


class ParityError(ConversionError):
    """The converted file disagrees with the torch model beyond the gate; it was not written."""
