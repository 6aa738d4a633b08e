"""Errors raised by the converter. Each is one user-facing line; the CLI prints it and exits with its code."""
from __future__ import annotations

from slidelite.errors import SlideliteError, UsageError


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
