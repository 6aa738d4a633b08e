"""``slidelite classify PATH...``: classify image files, folders (recursive) and glob patterns.

Output (stdout): one aligned line per image, or ``--json`` (JSON lines, one object per image), or
``--csv`` (a header, then one row per image and category). Each input that fails prints one
``error: <path>: <problem>`` line on stderr and the others are still classified.
Exit codes: 0 every input classified, 1 some input failed, 2 usage error (bad option, bad model option).
"""
from __future__ import annotations

import csv
import sys
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Tuple, Union

import click

from ..backends.litert_backend import held_native_stderr
from ..errors import ImageError, UsageError
from ..options import PREPROCESSING, ClassifierOptions
from ..results import ClassificationResult
from ._common import (Command, EXIT_INPUT_FAILED, EXIT_OK, backend_option, echo_json, error_boundary, model_option,
                      print_error, threads_option)
from ._inputs import InputItem, InputProblem, iter_inputs
from ._metadata_options import metadata_field_options, metadata_fields

if TYPE_CHECKING:  # pragma: no cover
    from ..classifier import Classifier

CSV_HEADER = ("path", "rank", "index", "label", "score")


class HumanWriter:
    """One line per image: ``path  label score | label score | ...``, the path column padded to the
    widest path printed so far (output streams, so earlier lines are never rewritten)."""

    def __init__(self, min_width: int = 16) -> None:
        self.width = min_width

    def write(self, path: str, result: ClassificationResult) -> None:
        """Print the line of one image."""
        self.width = max(self.width, len(path))
        ranked = " | ".join(f"{c.label} {c.score:.3f}" for c in result.categories)
        click.echo(f"{path:<{self.width}}  {ranked or '(no category passes the filters)'}")


class JsonWriter:
    """JSON lines: ``{"path", "categories": [{"index", "label", "score"}], "timings": {... ms}}``."""

    def write(self, path: str, result: ClassificationResult) -> None:
        """Print the JSON object of one image."""
        document = result.to_dict()
        echo_json({"path": path, "categories": document["categories"], "timings": document["timings"]})


class CsvWriter:
    """CSV: a header, then one row per image and kept category (an image with none gets one empty row)."""

    def __init__(self) -> None:
        self.rows = csv.writer(sys.stdout, lineterminator="\n")
        self.rows.writerow(CSV_HEADER)

    def write(self, path: str, result: ClassificationResult) -> None:
        """Print the rows of one image."""
        ranked = [(rank, c.index, c.label, f"{c.score:.6f}") for rank, c in enumerate(result.categories, 1)]
        for row in ranked or [("", "", "", "")]:
            self.rows.writerow((path, *row))
        sys.stdout.flush()


@click.command("classify", cls=Command)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@model_option
@click.option("--top-k", "-k", type=click.IntRange(min=0), default=5, show_default=True,
              help="Show at most K categories per image (0: all).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Hide categories scoring below this probability.")
@click.option("--allow", multiple=True, metavar="LABEL", help="Keep only these labels (repeatable).")
@click.option("--deny", multiple=True, metavar="LABEL", help="Drop these labels (repeatable).")
@backend_option
@threads_option
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Refuse images with more than N pixels. Default: Pillow's decompression-bomb limit.")
@click.option("--preprocessing", type=click.Choice(PREPROCESSING), default="fast", show_default=True,
              help="fast: resize only the pixels under the centre crop (large JPEGs decoded at reduced scale); "
                   "exact: resize the whole image as timm does. Identical for images at the model's size.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: header, then one row per image and category.")
@metadata_field_options
@error_boundary
def command(paths: Tuple[str, ...], model: Optional[str], top_k: int, threshold: float, allow: Sequence[str],
            deny: Sequence[str], backend: str, threads: Optional[int], max_pixels: Optional[int], preprocessing: str,
            as_json: bool, as_csv: bool, **fields: Any) -> int:
    """Classify images: files, folders (searched recursively) and glob patterns.

    \b
    Examples:
      slidelite classify photo.jpg
      slidelite classify --json photos/ 'more/**/*.png'
      slidelite classify --model my_model.onnx --top-k 3 --deny "tabby, tabby cat" cat.jpg
      slidelite classify --model foreign.onnx --labels labels.txt --mean 0.485,0.456,0.406 \
          --std 0.229,0.224,0.225 cat.jpg

    The metadata flags (--labels ... --output-kind) replace or supply fields of the model's metadata, for a
    model file made elsewhere; `slidelite metadata embed` writes them into the file once.
    """
    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be used together: choose one output format")
    from ..classifier import Classifier  # lazy: `slidelite --help` must not load the runtime

    options = ClassifierOptions(model=model, backend=backend, threads=threads, max_results=top_k,
                                score_threshold=threshold, category_allowlist=tuple(allow),
                                category_denylist=tuple(deny), max_image_pixels=max_pixels,
                                preprocessing=preprocessing, metadata_fields=metadata_fields(**fields))
    writer: Writer = JsonWriter() if as_json else CsvWriter() if as_csv else HumanWriter()
    with Classifier.create_from_options(options) as classifier:
        failed = classify_all(classifier, iter_inputs(paths), writer)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


Writer = Union[HumanWriter, JsonWriter, CsvWriter]


def classify_all(classifier: "Classifier", inputs: Iterable[InputItem], writer: Writer) -> int:
    """Classify each input path and write its result; report each failing input on stderr.

    Returns:
        The number of inputs that failed.
    """
    failed = 0
    for item in inputs:
        if isinstance(item, InputProblem):
            print_error(str(item))
            failed += 1
            continue
        with held_native_stderr() as native:  # C decoders (libtiff) print their own lines on stderr
            try:
                result: Optional[ClassificationResult] = classifier.classify(item)
            except ImageError as exc:
                result, problem = None, _naming(item, _with_native_detail(str(exc), native()))
        if result is None:
            print_error(problem)
            failed += 1
            continue
        writer.write(item, result)
    return failed


def _with_native_detail(message: str, native_log: str) -> str:
    """The error message, followed by the last line a C decoder printed while failing (if any)."""
    lines = [line.strip() for line in native_log.splitlines() if line.strip()]
    return f"{message}; {lines[-1]}" if lines else message


def _naming(path: str, message: str) -> str:
    """Make sure an image error names its input (prefix the path when the message does not)."""
    return message if path in message else f"{path}: {message}"
