"""``slidelite models [--json]``: the models shipped in the wheel and the zoo architectures known.

Reads only ``slidelite/models/manifest.json`` and a static list of zoo names: torch is never imported.
``--json`` prints one document ``{"shipped": [...], "zoo": [...]}``.
"""
from __future__ import annotations

import textwrap

import click

from .. import models as registry
from ._common import Command, echo_json, error_boundary, format_accuracy, human_size, json_option


@click.command("models", cls=Command)
@json_option
@error_boundary
def command(as_json: bool) -> None:
    """List the models shipped in the wheel and the zoo architectures known."""
    shipped = registry.list_shipped()
    if as_json:
        echo_json({"shipped": [m.to_dict() for m in shipped], "zoo": list(registry.ZOO_ARCHITECTURES)})
        return
    if shipped:
        click.echo("Shipped models (use with --model NAME; * = default):")
        rows = [(("*" if m.default else " ") + m.name, m.format, m.precision, human_size(m.size),
                 format_accuracy(m.accuracy), m.architecture or "-") for m in shipped]
        header = (" name", "format", "precision", "size", "accuracy", "architecture")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            click.echo("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip())
        for model in shipped:
            click.echo(f"  {model.file}: {model.path} sha256 {model.sha256}")
            if model.description:
                click.echo(f"    {model.description}")
    else:
        click.echo("No models are shipped in this installation: pass --model FILE to the commands "
                   "(convert one with `slidelite convert`).")
    click.echo("")
    click.echo("Zoo architectures (PyTorch; convert a checkpoint with `slidelite convert`, "
               "needs pip install \"slidelite[convert]\"):")
    click.echo(textwrap.fill(", ".join(registry.ZOO_ARCHITECTURES), width=100, initial_indent="  ",
                             subsequent_indent="  ", break_on_hyphens=False))
