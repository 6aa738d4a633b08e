"""``slidelite convert`` on bad input: one ``error:`` line naming the input and what to do, a non-zero exit
code, no traceback and never a partial output file. Also: official training checkpoints convert without
--model, and the command explains the missing converter extras."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from slidelite.model_file import open_model_file
from slidelite.zoo import create_model
from tests._cli_fixtures import ROOT, run_cli, run_subprocess
from tests._convert_fixtures import photo_folder_fixture
from tests._zoo_fixtures import official_config, save_training_checkpoint

pytestmark = pytest.mark.convert
FAST = ["-q", "--latency-runs", "0"]


photos = photo_folder_fixture(crops=0)


@pytest.fixture(scope="module")
def micro_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "micro.pth"
    torch.manual_seed(0)
    torch.save(create_model("slide_swin_micro").state_dict(), path)
    return path


def _assert_refused(run, tmp_path: Path, *fragments: str, code: int = 1, keep=()) -> None:
    assert run.exit_code == code, (run.stdout, run.stderr)
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in run.error_lines[0], run.error_lines[0]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


def test_missing_extras_is_one_line(tmp_path):
    blocker = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        from slidelite.cli import main
        main(["convert", "--model", "slide_swin_micro", "-o", sys.argv[1]])
    """)
    run = subprocess.run([sys.executable, "-c", blocker, str(tmp_path / "m.onnx")], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 1
    assert run.stderr.strip() == 'error: slidelite convert needs the converter extras: pip install "slidelite[convert]"'


def test_unknown_model_suggests_close_names(tmp_path):
    run = run_cli(["convert", "--model", "slide_swin_micor", "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, "unknown model 'slide_swin_micor'", "did you mean slide_swin_micro", code=2)


def test_labels_file_with_wrong_line_count(tmp_path, photos):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    run = run_cli(["convert", "--model", "slide_swin_micro", "--labels", labels, "--calib", photos,
                   "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, str(labels), "3 labels for a model with 10 outputs", keep=["labels.txt"])


@pytest.mark.parametrize("make, message", [(lambda d: d / "nope", "does not exist"),
                                           (lambda d: d, "holds no image files")])
def test_missing_or_empty_calibration_folder(tmp_path, make, message):
    calib = make(tmp_path)
    run = run_cli(["convert", "--model", "slide_swin_micro", "--int8", "--calib", calib, "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, f"calibration folder {calib}", message)


def test_int8_without_calibration_and_unknown_recipe(tmp_path, photos):
    run = run_cli(["convert", "--model", "slide_swin_micro", "--int8", "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, "--int8 needs calibration images")
    run = run_cli(["convert", "--model", "slide_swin_micro", "--int8", "--calib", photos, "--int8-recipe", "turbo",
                   "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, "unknown --int8-recipe 'turbo'", "dynamic-matmul", code=2)


def test_output_collision_needs_overwrite(tmp_path):
    taken = tmp_path / "m.onnx"
    taken.write_bytes(b"precious")
    run = run_cli(["convert", "--model", "slide_swin_micro", "-o", taken, *FAST])
    _assert_refused(run, tmp_path, f"{taken} already exists; pass --overwrite", keep=["m.onnx"])
    assert taken.read_bytes() == b"precious"


def test_output_folder_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run = run_subprocess(["convert", "--model", "slide_swin_micro", "-o", locked / "m.onnx", *FAST], unprivileged=True)
    finally:
        locked.chmod(0o755)
    assert run.exit_code == 1
    assert run.error_lines == [f"error: cannot write {locked / 'm.onnx'}: Permission denied; choose a writable -o"]
    assert os.listdir(locked) == []


def test_checkpoint_of_another_architecture(tmp_path, micro_weights):
    run = run_cli(["convert", "--model", "slide_pvt_tiny", "--checkpoint", micro_weights, "-o", tmp_path / "m.onnx",
                   *FAST])
    _assert_refused(run, tmp_path, str(micro_weights), "does not fit PyramidVisionTransformer", "missing key(s)",
                    "the weights fit slide_swin_micro")


def test_checkpoint_with_other_widths_is_built_at_them(tmp_path):
    """A zoo model's widths changed before training: the converter reads them from the weights."""
    wide = tmp_path / "wide.pth"
    torch.save(create_model("slide_swin_micro", embed_dim=48).state_dict(), wide)
    run = run_cli(["convert", "--model", "slide_swin_micro", "--checkpoint", wide, "-o", tmp_path / "m.onnx", *FAST])
    assert run.exit_code == 0, run.stderr
    assert "slide_swin_micro (embed_dim=48 (weights)" in run.stdout


class RunsCode:
    """Pickles as a call to os.system: loading it naively would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_checkpoint_with_code_is_refused(tmp_path, micro_weights):
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    torch.save({"model": torch.load(micro_weights, weights_only=True), "hook": RunsCode(marker)}, evil)
    run = run_cli(["convert", "--model", "slide_swin_micro", "--checkpoint", evil, "-o", tmp_path / "m.onnx", *FAST])
    _assert_refused(run, tmp_path, str(evil), "refused to unpickle", "system", keep=["evil.pth"])
    assert not marker.exists()


def test_broken_calibration_images_are_skipped_with_a_count(tmp_path, photos, micro_weights):
    calib = tmp_path / "calib"
    calib.mkdir()
    for photo in sorted(photos.iterdir())[:3]:
        (calib / photo.name).write_bytes(photo.read_bytes())
    (calib / "truncated.png").write_bytes((photos / "chelsea.png").read_bytes()[:200])
    (calib / "not-a-photo.jpg").write_text("hello")
    out = tmp_path / "m.onnx"
    run = run_cli(["convert", "--checkpoint", micro_weights, "--calib", calib, "-o", out, *FAST])
    assert run.exit_code == 0, run.stderr
    assert run.error_lines[0].startswith("warning: skipped 2 calibration file(s) that did not decode as images")
    assert (run.stdout + run.stderr).count("skipped 2 calibration file(s)") == 1  # on stderr, not again in the report
    assert open_model_file(out).metadata.metrics["validation_images"] == 3


def test_official_training_checkpoint_converts_without_model(tmp_path):
    config = official_config("slide_swin_tiny", img_size=64, num_classes=5, EMBED_DIM=24, DEPTHS=[1, 1, 1, 1],
                             NUM_HEADS=[1, 2, 4, 8])
    torch.manual_seed(0)
    model = create_model("slide_swin_tiny", img_size=64, num_classes=5, embed_dim=24, depths=(1, 1, 1, 1),
                         num_heads=(1, 2, 4, 8))
    ckpt = save_training_checkpoint(tmp_path / "ckpt_epoch_3.pth", model, config)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "small.onnx"
    run = run_cli(["convert", "--checkpoint", ckpt, "--labels", labels, "-o", out, *FAST])
    assert run.exit_code == 0, run.stderr
    meta = open_model_file(out).metadata
    assert meta.provenance.architecture == "slide_swin_tiny" and (meta.input.height, meta.input.width) == (64, 64)
    assert meta.labels == ("a", "b", "c", "d", "e")
