"""Issue 13 item 4: every file on every backend, or a clear no (``tests/_compat_matrix.py`` builds the matrix;
``scripts/compat_matrix.py`` writes it to docs/compatibility.md).

* architectures (Slide-Swin, Slide-PVT, Slide-PVTv2, torchvision MobileNetV3 / ResNet / ViT) x checkpoint
  formats (plain state_dict, ``{'model', 'epoch'}``, DDP ``module.``, EMA with ``--ema``, timm-style
  ``{'state_dict', 'arch'}``, official yacs for Slide-Swin) convert to ONNX fp32 and give torch's top-1 on
  six real photos;
* architectures x {onnx fp32, onnx int8, tflite fp32, tflite int8} x {onnxruntime, litert, tflite, numpy}:
  each cell gives torch's top-1 on every photo, or is refused with one line and the CLI's exit code (2: the
  backend does not take the format, 1: it refuses the file), never a traceback; ``slidelite info`` says
  "can run" exactly for the cells that run; and the cells of ``MUST_RUN`` run.

The models are small (64 px, 10 classes) with heads fitted so that each photo has its own class; converted
files are made once per session.
"""
from __future__ import annotations

import pytest

from tests._compat_matrix import ARCHS, BACKENDS, FILE_KINDS, MUST_RUN, ROOT, MatrixRun, checkpoint_cells

pytestmark = pytest.mark.convert
ARCH_KEYS = [arch.key for arch in ARCHS]


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> MatrixRun:
    """One matrix run for the session: fitted models, checkpoints and converted files made once."""
    return MatrixRun(tmp_path_factory.mktemp("compat_matrix"))


def _one_line_refusal(conversion) -> None:
    lines = [line for line in conversion.stderr.splitlines() if line.strip()]
    assert conversion.exit_code == 1 and len(lines) == 1 and "Traceback" not in conversion.stderr, conversion.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCH_KEYS)
def test_every_file_runs_on_every_backend_or_is_refused_in_one_line(matrix, arch):
    made, cells = matrix.file_cells(arch)
    for kind, conversion in made.items():
        if conversion.path is None:
            _one_line_refusal(conversion)
    failures = [f"{c.kind} on {c.backend}: {c.detail}" for c in cells if c.outcome == "fails"]
    assert not failures, failures
    wrong_info = [f"{c.kind} on {c.backend}: info says can_run={c.info_says_runs}, the cell {c.outcome}"
                  for c in cells if c.info_says_runs != (c.outcome == "runs")]
    assert not wrong_info, wrong_info
    outcome = {(c.kind, c.backend): c.outcome for c in cells}
    not_run = sorted(f"{kind} on {backend}: {outcome.get((kind, backend), made[kind].message)}"
                     for kind, backend in MUST_RUN if outcome.get((kind, backend)) != "runs")
    assert not not_run, not_run
    assert len(cells) == len(FILE_KINDS) * 4


@pytest.mark.slow
@pytest.mark.parametrize("arch, fmt", checkpoint_cells(), ids=[f"{a}-{f}" for a, f in checkpoint_cells()])
def test_every_checkpoint_format_converts_and_classifies_like_torch(matrix, arch, fmt):
    conversion, cell = matrix.checkpoint_cell(arch, fmt)
    assert cell is not None, f"{arch} from a {fmt} checkpoint: {conversion.message}"
    assert cell.outcome == "runs", cell.detail


def test_docs_table_is_the_scripts_output_and_holds_no_failure():
    """docs/compatibility.md is written by scripts/compat_matrix.py: every architecture and file kind has a row,
    no cell failed, and the cells that must run are marked as running."""
    page = (ROOT / "docs" / "compatibility.md").read_text(encoding="utf-8")
    assert "written by scripts/compat_matrix.py" in page and "FAILS" not in page
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line.strip("|").split("|")[2:]
            for line in page.splitlines() if line.startswith("| ") and line.count("|") == len(BACKENDS) + 3}
    for arch in ARCHS:
        for kind in FILE_KINDS:
            cells = [c.strip() for c in rows[(arch.title, kind)]]
            for backend, cell in zip(BACKENDS, cells):
                if (kind, backend) in MUST_RUN:
                    assert cell.startswith("**runs**"), (arch.title, kind, backend, cell)
