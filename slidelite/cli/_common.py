"""Helpers shared by the ``slidelite`` sub-commands: the error boundary, shared options, output helpers.

Every expected failure is a :class:`~slidelite.errors.SlideliteError`; :func:`error_boundary` turns it into
one ``error: ...`` line on stderr and the error's exit code (1 input failure, 2 usage), so no command ever
prints a traceback for bad input. Ctrl-C exits 130 with one line; a closed stdout pipe (``| head``) exits
quietly.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, TypeVar

import click

from ..errors import SlideliteError
from ..options import BACKENDS

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_INTERRUPTED = 130


def print_error(message: str) -> None:
    """Print one ``error: <message>`` line on stderr (newlines in the message are flattened)."""
    click.echo(f"error: {_one_line(message)}", err=True)


def print_warning(message: str) -> None:
    """Print one ``warning: <message>`` line on stderr."""
    click.echo(f"warning: {_one_line(message)}", err=True)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def error_boundary(command: F) -> F:
    """Decorate a command callback: expected errors become one stderr line and an exit code.

    The callback may return an int exit code (None means 0).
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            with warnings.catch_warnings():
                # Pillow warns (and logs, through logging's last-resort handler) on stderr before the runtime
                # refuses a decompression bomb or a damaged file, or ignores corrupt EXIF data; the runtime's
                # own one-line message (or the result) is what the user gets.
                warnings.filterwarnings("ignore", module=r"PIL\.")
                if not logging.getLogger("PIL").handlers:
                    logging.getLogger("PIL").addHandler(logging.NullHandler())
                code = command(*args, **kwargs)
        except SlideliteError as exc:
            print_error(str(exc))
            code = exc.exit_code
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            code = EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader (e.g. `| head`) went away: stop quietly; point stdout at devnull so the
            # interpreter's final flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = EXIT_OK
        sys.exit(code or EXIT_OK)

    return run  # type: ignore[return-value]


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one ``error:`` line (exit code 2) instead of click's usage block."""

    def show(self, file: Any = None) -> None:
        """Print ``error: <problem>; see `<command> --help``` on stderr."""
        hint = f"; see `{self.ctx.command_path} --help`" if self.ctx is not None else ""
        print_error(f"{self.format_message().rstrip('.')}{hint}")


class Command(click.Command):
    """A click command whose option and argument errors are one line (see :class:`OneLineUsageError`)."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        """Parse as click does; turn a usage error into a :class:`OneLineUsageError`."""
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx or ctx) from None


def model_option(command: F) -> F:
    """``--model NAME|FILE``: a model file or a shipped model name (default: the embedded default model)."""
    return click.option(
        "--model", "-m", "model", metavar="NAME|FILE", default=None,
        help="Model file (.onnx/.tflite) or shipped model name (see `slidelite models`). "
             "Default: the embedded default model.",
    )(command)


def backend_option(command: F) -> F:
    """``--backend``: which inference engine runs the model."""
    return click.option(
        "--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
        help="Inference engine; auto picks from the file type and what is installed.",
    )(command)


def threads_option(command: F) -> F:
    """``--threads N`` (N >= 1; default: the number of physical cores)."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, metavar="N",
        help="Inference threads (>= 1). Default: the number of physical cores.",
    )(command)


def json_option(command: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(command)


def echo_json(document: Any) -> None:
    """Print ``document`` as one compact JSON line."""
    click.echo(json.dumps(document, ensure_ascii=False, separators=(",", ":")))


def human_size(size: int) -> str:
    """``1536`` -> ``1.5 KiB`` (B, KiB, MiB, GiB)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def format_accuracy(accuracy: Optional[Dict[str, Any]]) -> str:
    """A measured-accuracy mapping as short text: numbers as ``key=value``, strings in brackets."""
    if not accuracy:
        return "-"
    numbers = [f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4g}"
               for k, v in accuracy.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    words = [f"{v}" for v in accuracy.values() if isinstance(v, str)]
    return " ".join(numbers) + (f" ({', '.join(words)})" if words else "")
