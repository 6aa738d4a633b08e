"""``slidelite info MODEL``: what a model file is and whether this machine can run it.

Shows the file (format, size, sha256 and, for a shipped model, whether the sha256 matches the manifest),
the backend that would run it and why (``--backend auto``: the first installed one, in preference order),
the input/output signature that backend reports, the slidelite metadata, and a table of every backend:
can it run this file as it is, and why not (format, engine not installed or broken, or the backend's own
refusal at load: an op, attribute or dtype it lacks; see :mod:`slidelite.backends.capability`).
``--json`` prints the same as one JSON document (``"backends"``: the table, ``"backend"["why"]``).

Exit codes: 0 the file was inspected, even when it cannot be classified with as it is (no or invalid
metadata, metadata that disagrees with the model, no backend installed): each such problem is one
``warning:`` line on stderr (``"problems"`` in ``--json``). 1 the file is not a readable model, or a
shipped file fails its sha256 check. 2 usage errors.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import click

from .. import backends, models
from ..backends import capability
from ..errors import BackendUnavailableError, MetadataError, ModelError
from ..metadata import ModelMetadata
from ..metadata_fields import source_lines
from ..model_file import ModelFile, check_signature, open_model_file
from ._common import Command, backend_option, echo_json, error_boundary, human_size, json_option, print_warning

LABELS_SHOWN = 5


@click.command("info", cls=Command)
@click.argument("model", metavar="MODEL")
@backend_option
@json_option
@error_boundary
def command(model: str, backend: str, as_json: bool) -> int:
    """Show MODEL's metadata, signature, size, sha256 and the backend that would run it.

    MODEL is a model file (.onnx/.tflite) or the name of a shipped model (see `slidelite models`).
    """
    model_file = open_model_file(models.resolve_model(model, backend, verify_checksum=False))
    report = inspect(model_file, backend)
    if as_json:
        echo_json(report)
    else:
        _print_report(report, model_file.metadata)
    for problem in report["problems"]:
        print_warning(problem)
    shipped = report["shipped"]
    if shipped and not shipped["sha256_matches"]:
        raise ModelError(f"{model_file.path}: sha256 mismatch (expected {shipped['sha256']}, got "
                         f"{model_file.sha256}): the installed file is corrupt; reinstall slidelite")
    return 0


def inspect(model_file: ModelFile, backend_name: str = "auto") -> Dict[str, Any]:
    """The JSON-ready report on ``model_file`` (see the module docstring); problems are listed, not raised.

    Raises:
        UsageError: ``backend_name`` cannot run this format.
        ModelError: the engine cannot load the file.
    """
    problems: List[str] = []
    shipped = models.shipped_for_path(model_file.path)
    report: Dict[str, Any] = {
        "path": str(model_file.path), "format": model_file.format, "size": model_file.size,
        "sha256": model_file.sha256,
        "shipped": None if shipped is None else {
            "name": shipped.name, "sha256": shipped.sha256, "sha256_matches": shipped.sha256 == model_file.sha256},
        "backends_installed": backends.available_backends(model_file.format),
        "backend": None, "backends": [], "signature": None,
        "metadata": model_file.metadata.to_dict() if model_file.metadata else None,
        "metadata_origin": model_file.metadata_origin or None,
        "metadata_sources": dict(model_file.metadata_sources),
        "problems": problems,
    }
    if model_file.metadata_error:
        problems.append(model_file.metadata_error)
    choice = capability.choose(model_file, backend_name)
    report["backends"] = [verdict._asdict() for verdict in choice.verdicts]
    engine = choice.backend
    if engine is None:
        problems.append(_no_engine_problem(model_file, backend_name, choice))
        return report
    try:
        report["backend"] = {"name": engine.name, "version": engine.version, "why": choice.why}
        report["signature"] = {
            "input": {"name": engine.input_name, "shape": list(engine.input_shape), "dtype": engine.input_dtype},
            "output": {"shape": list(engine.output_shape)},
        }
        if model_file.metadata is not None:
            check_signature(model_file.metadata, engine, model_file.name)
    except MetadataError as exc:
        problems.append(str(exc))
    finally:
        engine.close()
    return report


def _no_engine_problem(model_file: ModelFile, backend_name: str, choice: capability.Choice) -> str:
    """The warning when the backend ``backend_name`` picks cannot run the file, or none is usable at all."""
    if choice.chosen is None:  # no engine imports: create_backend's own message names the pip extra
        try:
            backends.create_backend(model_file, backend_name, threads=1).close()
        except BackendUnavailableError as exc:
            return str(exc)
    refusal = next((v.reason for v in choice.verdicts if v.backend == choice.chosen), "no engine imports")
    others = [v.backend for v in choice.verdicts if v.can_run]
    hint = f"; it runs with --backend {' or '.join(others)}" if others else ""
    return f"{model_file.path}: {choice.chosen} cannot run this file: {refusal}{hint}"


def _print_report(report: Dict[str, Any], metadata: Optional[ModelMetadata]) -> None:
    shipped = report["shipped"]
    integrity = "" if shipped is None else (
        f" (shipped model '{shipped['name']}': matches the manifest)" if shipped["sha256_matches"]
        else f" (shipped model '{shipped['name']}': MISMATCH, the manifest expects {shipped['sha256']})")
    lines = [
        ("file", report["path"]),
        ("format", f"{report['format']}, {human_size(report['size'])} ({report['size']} bytes)"),
        ("sha256", report["sha256"] + integrity),
        ("backend", _backend_text(report)),
    ]
    signature = report["signature"]
    if signature:
        inp = signature["input"]
        lines.append(("input", f"{inp['name']} {_shape(inp['shape'])} {inp['dtype']}"))
        lines.append(("output", _shape(signature["output"]["shape"])))
    lines += _metadata_lines(metadata, report["metadata_origin"]) if metadata else [
        ("metadata", "none (see the warning below)")]
    lines += [("field source", f"{key}: {where}") for key, where in source_lines(report["metadata_sources"], "")
              if report["metadata_sources"]]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        click.echo(f"{key + ':':<{width + 1}} {value}")
    _print_verdicts(report["backends"])


def _print_verdicts(verdicts: List[Dict[str, Any]]) -> None:
    """The table of which backends can run the file as it is."""
    rows = [("backend", "can run", "reason")] + [
        (v["backend"], "yes" if v["can_run"] else "no", v["reason"]) for v in verdicts]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    click.echo("\ncan each backend run this file as it is? (checked by loading it)")
    for name, can_run, reason in rows:
        click.echo(f"  {name:<{widths[0]}}  {can_run:<{widths[1]}}  {reason}")


def _backend_text(report: Dict[str, Any]) -> str:
    installed = ", ".join(report["backends_installed"]) or "none"
    chosen = report["backend"]
    if chosen is None:
        return f"none (see the warning below; installed for {report['format']}: {installed})"
    return f"{chosen['name']} {chosen['version']} ({chosen['why']}; installed for {report['format']}: {installed})"


def _metadata_lines(metadata: ModelMetadata, origin: str) -> List[tuple]:
    labels = metadata.labels
    shown = ", ".join(labels[:LABELS_SHOWN]) + (", ..." if len(labels) > LABELS_SHOWN else "")
    inp, pre, out, prov = metadata.input, metadata.preprocess, metadata.output, metadata.provenance
    quant = f", quantization scale {inp.quantization.scale:g} zero point {inp.quantization.zero_point}" \
        if inp.quantization else ""
    provenance = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vars(prov).items() if v) or "-"
    metrics = ", ".join(f"{k}={v}" for k, v in metadata.metrics.items()) or "-"
    return [
        ("name", metadata.name + (f" ({metadata.description})" if metadata.description else "")),
        ("metadata", f"{origin}, schema version {metadata.schema_version}, precision {metadata.precision}"),
        ("labels", f"{metadata.num_classes}: {shown}"),
        ("input spec", f"'{inp.name}' {inp.layout} {inp.height}x{inp.width} {inp.dtype}{quant}"),
        ("preprocess", f"{pre.color_mode}, resize {pre.resize_mode}, crop_pct {pre.crop_pct:g}, {pre.interpolation}, "
                       f"mean {_numbers(pre.mean)}, std {_numbers(pre.std)}"),
        ("output spec", f"'{out.name}' {out.kind}"),
        ("provenance", provenance),
        ("metrics", metrics),
    ]


def _shape(shape: List[Optional[int]]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _numbers(values: tuple) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
