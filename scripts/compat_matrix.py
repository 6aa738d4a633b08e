"""Write docs/compatibility.md: which file the converter writes runs on which backend (issue 13 item 4).

Builds the matrix of ``tests/_compat_matrix.py`` (the same models, checkpoints, conversions and CLI runs as
``tests/test_compat_matrix.py``) and writes its outcome as Markdown tables. Takes a few minutes of CPU.

Usage (from the repository root, after ``scripts/setup_tflite.sh`` for the tflite column)::

    .venv/bin/python scripts/compat_matrix.py [-o docs/compatibility.md]
"""
from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._compat_matrix import (ARCHS, BACKENDS, CHECKPOINT_FORMATS, FILE_KINDS, MUST_RUN, PHOTO_CLASSES,  # noqa: E402
                                  TFLITE_PYTHON, Cell, Conversion, MatrixRun, checkpoint_cells)


class Notes:
    """Numbered footnotes: each distinct refusal message once."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)
        self.messages: List[str] = []

    def ref(self, message: str) -> str:
        """The footnote number of ``message`` (the model file's path written as FILE, so that files refused
        alike share a note)."""
        text = re.sub(r"[\w./-]*\.(onnx|tflite)\b", "FILE", message.replace(self.folder + "/", "")).removeprefix("error: ")
        if text not in self.messages:
            self.messages.append(text)
        return f"[{self.messages.index(text) + 1}](#n{self.messages.index(text) + 1})"


def _cell_text(cell: Optional[Cell], conversion: Conversion, notes: Notes) -> str:
    if cell is None:
        return f"not written {notes.ref(conversion.message)}"
    info = "" if cell.info_says_runs == (cell.outcome == "runs") else f" (info: can_run={cell.info_says_runs}!)"
    if cell.outcome == "runs":
        return f"**runs**{info}"
    if cell.outcome == "refused":
        return f"no, exit {cell.probe['classify']['exit']} {notes.ref(cell.detail)}{info}"
    return f"FAILS: {cell.detail[:120]}"


def _engine_versions() -> str:
    versions = [f"{name} {_version(name)}" for name in ("torch", "onnxruntime", "ai-edge-litert", "numpy")]
    tflite = subprocess.run([str(TFLITE_PYTHON), "-c", "import importlib.metadata as m; print(m.version('tflite-runtime'))"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return ", ".join(versions + [f"tflite-runtime {tflite or 'missing'} (.venv-tflite)"])


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def render(run: MatrixRun) -> str:
    """The Markdown page of a finished matrix run."""
    notes = Notes(run.folder)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    out = ["# Compatibility: every file on every backend, or a clear no", "",
           "<!-- written by scripts/compat_matrix.py; do not edit by hand -->", "",
           "Each cell is one model file run by `slidelite classify --backend B --model FILE` on six scikit-image "
           f"photos ({', '.join(sorted(PHOTO_CLASSES))}). **runs**: every photo gets the same top-1 as the torch "
           "model the file was converted from; **no**: the CLI refuses in one line (exit 2: the backend does not "
           "take that format; exit 1: it refuses the file), never a traceback. `slidelite info FILE` says "
           "`can_run` for exactly the cells that run (a disagreement would be marked `info: can_run=...!`).", "",
           "The models are small (64 px, 10 classes) with seeded weights and a head fitted so that each photo has "
           "its own class, saved as checkpoints and converted through the CLI (`slidelite convert --checkpoint "
           "... --labels ...`; int8 with the default recipe the converter picks, calibrated on the photos). "
           "`tests/test_compat_matrix.py` asserts every cell and that these cells run: "
           + ", ".join(f"{k} on {b}" for k, b in sorted(MUST_RUN)) + ".", "",
           f"Measured at git `{commit}` on {platform.machine()} Linux, Python {platform.python_version()}: "
           f"{_engine_versions()}.", "",
           "## Files x backends (converted from a plain state_dict)", "",
           "| architecture | file | " + " | ".join(BACKENDS) + " |", "|---|---|" + "---|" * len(BACKENDS)]
    for arch in ARCHS:
        made, cells = run.file_cells(arch.key)
        by_key: Dict[tuple, Cell] = {(c.kind, c.backend): c for c in cells}
        for kind in FILE_KINDS:
            row = [_cell_text(by_key.get((kind, b)), made[kind], notes) for b in BACKENDS]
            out.append(f"| {arch.title} | {kind} | " + " | ".join(row) + " |")
    out += ["", "## Checkpoint formats x architectures (ONNX fp32, run on onnxruntime)", "",
            "Formats: `state_dict` (plain), `model+epoch` (`{'model': sd, 'epoch'}`), `ddp` (`{'state_dict': "
            "{'module.'+k}}`), `ema` (`{'model', 'state_dict_ema'}` converted with `--ema`; the non-EMA weights "
            "give other classes, so using them would show), `timm` (`{'state_dict', 'arch'}`), `official` "
            "(the official training checkpoint with its yacs config, MODEL.NAME a run name).", "",
            "| architecture | " + " | ".join(CHECKPOINT_FORMATS) + " |", "|---|" + "---|" * len(CHECKPOINT_FORMATS)]
    pairs = set(checkpoint_cells())
    for arch in ARCHS:
        row = []
        for fmt in CHECKPOINT_FORMATS:
            if (arch.key, fmt) not in pairs:
                row.append("-")
                continue
            conversion, cell = run.checkpoint_cell(arch.key, fmt)
            row.append(_cell_text(cell, conversion, notes))
        out.append(f"| {arch.title} | " + " | ".join(row) + " |")
    out += ["", "## Messages", ""]
    out += [f'<a id="n{i}"></a>{i}. `{text}`' for i, text in enumerate(notes.messages, start=1)]
    return "\n".join(out) + "\n"


def main() -> None:
    """Run the matrix in a temporary folder and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "compatibility.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slidelite-compat-") as folder:
        page = render(MatrixRun(Path(folder)))
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
