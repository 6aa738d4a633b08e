"""``slidelite metadata embed MODEL``: embed slidelite metadata into an ``.onnx``/``.tflite`` made elsewhere.

The fields come from the flags shared with ``slidelite classify`` (:mod:`._metadata_options`), else the file's own
metadata (slidelite's, or the standard TFLite Metadata), else the graph, else timm's defaults; each line of the
report says where its field came from. Needs neither torch nor onnx nor an inference engine. The file is written
atomically (a temporary file, then a rename) to ``-o OUT``, or over MODEL with ``--in-place``.

Exit codes: 0 written, 1 the model or a field is refused (nothing written), 2 usage error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import click

from ..errors import UsageError
from ..metadata_fields import source_lines
from ..model_file import open_model_file, resolve_file_metadata
from ._common import Command, OneLineUsageError, error_boundary
from ._metadata_options import metadata_field_options, metadata_fields


class Group(Command, click.Group):
    """A click group whose usage errors (unknown sub-command included) are one line, like every slidelite command."""

    def resolve_command(self, ctx: click.Context, args: List[str]) -> Tuple[Optional[str], Optional[click.Command], List[str]]:
        """Find the sub-command as click does; an unknown one is a :class:`OneLineUsageError`."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx or ctx) from None


@click.group("metadata", cls=Group, invoke_without_command=True, no_args_is_help=False)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Embed slidelite metadata into model files made elsewhere."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@command.command("embed", cls=Command, short_help="Embed metadata fields into an .onnx or .tflite file.")
@click.argument("model", type=click.Path(path_type=Path), metavar="MODEL")
@metadata_field_options
@click.option("--name", default=None, help="Model name in the metadata (default: the file's, else its stem).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="File to write.")
@click.option("--in-place", is_flag=True, help="Replace MODEL itself (atomically) instead of writing -o.")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file.")
@error_boundary
def embed(model: Path, output: Optional[Path], in_place: bool, overwrite: bool, name: Optional[str],
          **flags: Any) -> int:
    """Embed labels, input size, normalization, crop and layout into MODEL (.onnx or .tflite).

    \b
    Examples:
      slidelite metadata embed model.onnx --labels labels.txt --mean 0.485,0.456,0.406 \\
          --std 0.229,0.224,0.225 --crop-pct 0.875 --interpolation bicubic -o model_md.onnx
      slidelite metadata embed teachable.tflite --labels labels.txt --in-place
    """
    if (output is None) == (not in_place):
        raise UsageError("give either -o OUT or --in-place (replace MODEL)")
    destination = model if in_place else output
    assert destination is not None
    if not in_place and destination.exists() and not overwrite:
        raise UsageError(f"{destination} exists: pass --overwrite to replace it, or choose another -o")
    fields = metadata_fields(**flags, name=name)
    model_file = open_model_file(model)
    metadata, sources = resolve_file_metadata(model_file, fields, always=True)
    from ..metadata_embed import embed_metadata  # lazy: only this sub-command writes files

    embed_metadata(model_file.path, model_file.format, metadata, destination)
    click.echo(f"wrote {destination}: slidelite metadata, {metadata.num_classes} labels, input {metadata.input.layout} "
               f"{metadata.input.height}x{metadata.input.width} {metadata.input.dtype}")
    for key, where in source_lines(sources, model_file.metadata_origin or "slidelite metadata"):
        click.echo(f"  {key}: {where}")
    return 0
