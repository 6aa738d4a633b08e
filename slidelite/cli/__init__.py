"""The ``slidelite`` command line (click). Each sub-command lives in its own module and is imported lazily,
so ``slidelite classify`` never imports the converter (torch) and starts fast on a Raspberry Pi.

Exit codes: 0 success, 1 some input failed (the others were still processed), 2 usage error.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Dict, List, Optional

import click

from .. import __version__

# command name -> (module under slidelite.cli, one-line help shown by `slidelite --help`)
COMMANDS: Dict[str, tuple] = {
    "classify": ("classify", "Classify images (files, directories, globs)."),
    "info": ("info", "Show a model file's metadata, signature, size, sha256 and backend."),
    "models": ("models", "List the models shipped in the wheel and the zoo architectures."),
    "metadata": ("metadata", "Embed labels, input size, mean/std into a model made elsewhere."),
    "convert": ("convert", "Convert a PyTorch classifier to ONNX/TFLite (needs slidelite[convert])."),
    "bench": ("bench", "Benchmark model latency (init, first run, percentiles, RSS)."),
    "camera": ("camera", "Classify a live camera/video/image-folder stream."),
    "web": ("web", "Write a static site that classifies in a phone's browser; --serve it on the LAN."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in COMMANDS:
            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; commands: {', '.join(COMMANDS)}"
            # one line, exit 2, like every other usage error of the CLI
            click.echo(f"error: no such command '{name}'{hint}", err=True)
            ctx.exit(2)
        module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slidelite")
def main() -> None:
    """slidelite: run Slide-Transformer (and other) image classifiers on edge devices, without PyTorch."""
