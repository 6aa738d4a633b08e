"""``slidelite classify``: outputs, inputs (files, folders, globs), bad inputs, bad models, usage errors.

Real photos (scikit-image) and the real fixture ONNX classifier; in-process through click's CliRunner and
through real ``python -m slidelite`` processes.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from slidelite.classifier import Classifier
from slidelite.cli._inputs import InputProblem, iter_inputs
from tests._cli_fixtures import (ROOT, SAMPLE, run_cli, run_subprocess, skimage_photo, write_bad_images,
                                 write_good_images)
from tests._runtime_fixtures import LABELS, fixture_metadata, make_fixture_onnx


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with the fixture model, a folder of good images and a folder of bad ones."""
    root = tmp_path_factory.mktemp("classify")
    make_fixture_onnx(root / "model.onnx")
    write_good_images(root / "good")
    write_bad_images(root / "bad")
    return root


@pytest.fixture(scope="module")
def model(work: Path) -> Path:
    return work / "model.onnx"


def _json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines()]


def _assert_clean_errors(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert all(line.startswith("error: ") for line in stderr.splitlines() if line.strip()), stderr


# ---------------------------------------------------------------- output formats


def test_human_output_is_one_aligned_line_per_image(model: Path, work: Path) -> None:
    images = sorted((work / "good").iterdir(), key=lambda p: -len(str(p)))  # widest path first
    run = run_cli(["classify", "--model", model, *images])
    assert run.exit_code == 0 and run.stderr == ""
    lines = run.stdout.splitlines()
    assert len(lines) == len(images)
    column = max(16, len(str(images[0]))) + 2
    with Classifier.from_file(model) as classifier:
        for path, line in zip(images, lines):
            expected = classifier.classify(path).categories
            assert line[:column] == f"{str(path):<{column}}"
            assert line[column:].split(" | ") == [f"{c.label} {c.score:.3f}" for c in expected]


@pytest.mark.parametrize("preprocessing", ["fast", "exact"])
def test_preprocessing_option_reaches_the_classifier(model: Path, tmp_path: Path, preprocessing: str) -> None:
    photo = tmp_path / "large.png"  # large enough that the fast path reduces it: the two paths differ
    Image.fromarray(skimage_photo("astronaut")).resize((1600, 1200)).save(photo)
    run = run_cli(["classify", "--model", model, "--json", "--top-k", "0", "--preprocessing", preprocessing, photo])
    assert run.exit_code == 0, run.stderr
    scores = [c["score"] for c in _json_lines(run.stdout)[0]["categories"]]
    results = {}
    for mode in ("fast", "exact"):
        with Classifier.from_file(model, max_results=0, preprocessing=mode) as classifier:
            results[mode] = [c.score for c in classifier.classify(photo).categories]
    assert results["fast"] != pytest.approx(results["exact"], abs=1e-6)
    assert scores == pytest.approx(results[preprocessing], abs=1e-6)


def test_unknown_preprocessing_is_a_usage_error(model: Path) -> None:
    run = run_cli(["classify", "--model", model, "--preprocessing", "quick", SAMPLE])
    assert run.exit_code == 2 and "quick" in run.stderr and "Traceback" not in run.stderr


def test_json_lines_match_the_python_api(model: Path) -> None:
    run = run_cli(["classify", "--model", model, "--json", "--top-k", "3", SAMPLE])
    assert run.exit_code == 0, run.stderr
    (document,) = _json_lines(run.stdout)
    assert set(document) == {"path", "categories", "timings"}
    assert document["path"] == str(SAMPLE)
    with Classifier.from_file(model, max_results=3) as classifier:
        expected = classifier.classify(SAMPLE).categories
    assert [(c["index"], c["label"]) for c in document["categories"]] == [(c.index, c.label) for c in expected]
    assert [c["score"] for c in document["categories"]] == pytest.approx([c.score for c in expected], abs=1e-6)
    assert set(document["timings"]) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
    assert all(value >= 0 for value in document["timings"].values())


def test_json_dir_and_bad_file_subprocess(model: Path, work: Path) -> None:
    """The issue's 'done when': one JSON line per good image, one error line for the bad one, exit 1."""
    bad = work / "bad" / "text.jpg"
    run = run_subprocess(["classify", "--model", model, "--json", work / "good", bad])
    assert run.exit_code == 1
    documents = _json_lines(run.stdout)
    assert sorted(d["path"] for d in documents) == sorted(str(p) for p in (work / "good").iterdir())
    assert all(len(d["categories"]) == 5 for d in documents)
    assert run.error_lines == [f"error: {bad}: not an image file (cannot identify image format)"]


def test_csv_parses_and_agrees_with_json(model: Path, work: Path) -> None:
    args = ["classify", "--model", model, "--top-k", "3", work / "good"]
    table = run_cli([*args, "--csv"])
    assert table.exit_code == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.stdout.splitlines()[0] == "path,rank,index,label,score"
    documents = _json_lines(run_cli([*args, "--json"]).stdout)
    expected = [(d["path"], str(rank), str(c["index"]), c["label"], c["score"])
                for d in documents for rank, c in enumerate(d["categories"], 1)]
    assert len(rows) == 3 * len(documents) == len(expected)
    for row, (path, rank, index, label, score) in zip(rows, expected):
        assert (row["path"], row["rank"], row["index"], row["label"]) == (path, rank, index, label)
        assert float(row["score"]) == pytest.approx(score, abs=1e-6)


def test_csv_quotes_labels_with_commas(tmp_path: Path) -> None:
    labels = ["tabby, tabby cat", 'say "cheese"', *LABELS[2:]]
    model = make_fixture_onnx(tmp_path / "m.onnx", metadata=fixture_metadata(labels=labels))
    run = run_cli(["classify", "--model", model, "--csv", "--top-k", "0", SAMPLE])
    assert run.exit_code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert sorted(r["label"] for r in rows) == sorted(labels)


# ---------------------------------------------------------------- filters


def _categories(model: Path, *options: str) -> list:
    run = run_cli(["classify", "--model", model, "--json", *options, SAMPLE])
    assert run.exit_code == 0, run.stderr
    return _json_lines(run.stdout)[0]["categories"]


def test_top_k_threshold_allow_deny(model: Path) -> None:
    everything = _categories(model, "--top-k", "0")
    assert len(everything) == len(LABELS)
    assert sum(c["score"] for c in everything) == pytest.approx(1.0, abs=1e-5)
    assert [c["label"] for c in _categories(model, "-k", "2")] == [c["label"] for c in everything[:2]]

    cut = everything[2]["score"]
    kept = _categories(model, "--top-k", "0", "--threshold", str(cut))
    assert [c["label"] for c in kept] == [c["label"] for c in everything if c["score"] >= cut]
    assert len(kept) == 3

    allowed = _categories(model, "--allow", everything[4]["label"], "--allow", everything[1]["label"])
    assert [c["label"] for c in allowed] == [everything[1]["label"], everything[4]["label"]]

    denied = _categories(model, "--top-k", "3", "--deny", everything[0]["label"])
    assert [c["label"] for c in denied] == [c["label"] for c in everything[1:4]]


def test_everything_filtered_out_still_prints_the_image(model: Path) -> None:
    run = run_cli(["classify", "--model", model, "--threshold", "1.0", SAMPLE])
    assert run.exit_code == 0
    assert run.stdout.startswith(str(SAMPLE)) and "(no category passes the filters)" in run.stdout
    table = run_cli(["classify", "--model", model, "--threshold", "1.0", "--csv", SAMPLE])
    assert list(csv.reader(io.StringIO(table.stdout)))[1] == [str(SAMPLE), "", "", "", ""]


# ---------------------------------------------------------------- inputs: folders, globs, streaming


def test_folders_are_searched_recursively_for_images(model: Path, tmp_path: Path) -> None:
    for name in ["a/one.jpg", "a/b/two.PNG", "c/.hidden.jpg", "c/notes.txt", "three.jpeg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE, tmp_path / name)
    run = run_cli(["classify", "--model", model, "--json", tmp_path])
    assert run.exit_code == 0, run.stderr
    assert [d["path"] for d in _json_lines(run.stdout)] == [
        str(tmp_path / "a" / "b" / "two.PNG"), str(tmp_path / "a" / "one.jpg"), str(tmp_path / "three.jpeg")]


def test_quoted_glob_patterns_are_expanded(model: Path, work: Path, monkeypatch) -> None:
    monkeypatch.chdir(work)
    run = run_cli(["classify", "--model", model, "--json", "good/*.png", "good/**/*.gif", "nothing/*.jpg"])
    assert run.exit_code == 1
    assert sorted(d["path"] for d in _json_lines(run.stdout)) == sorted(
        [f"good/{p.name}" for p in (work / "good").glob("*.png")] + ["good/animated.gif"])
    assert run.error_lines == ["error: nothing/*.jpg: no files match this pattern"]


def test_inputs_are_streamed_not_collected(tmp_path: Path) -> None:
    """Paths are yielded as folders are walked: a file created after the first path was taken is still found."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(SAMPLE, tmp_path / "a" / "1.jpg")
    items = iter_inputs([str(tmp_path)])
    assert next(items) == str(tmp_path / "a" / "1.jpg")
    shutil.copy(SAMPLE, tmp_path / "b" / "2.jpg")
    assert list(items) == [str(tmp_path / "b" / "2.jpg")]


def test_input_problems_are_yielded_in_order(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    items = list(iter_inputs([str(tmp_path / "missing.jpg"), str(SAMPLE), str(tmp_path / "empty")]))
    assert items[1] == str(SAMPLE)
    assert isinstance(items[0], InputProblem) and str(items[0]).endswith("missing.jpg: no such file or directory")
    assert isinstance(items[2], InputProblem) and "no images found in this directory" in str(items[2])


# ---------------------------------------------------------------- bad inputs: one line each, others still classified

BAD_IMAGES = ["zero_bytes.jpg", "text.jpg", "truncated.jpg", "truncated.png", "bomb.png"]


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_image_is_one_line_and_the_others_are_classified(model: Path, work: Path, name: str) -> None:
    fragments = {"zero_bytes.jpg": "zero-byte", "text.jpg": "not an image file", "truncated.jpg": "truncated",
                 "truncated.png": "truncated", "bomb.png": "decompression bomb"}
    bad = work / "bad" / name
    run = run_cli(["classify", "--model", model, "--json", SAMPLE, bad, work / "good" / "coffee.png"])
    assert run.exit_code == 1
    assert [d["path"] for d in _json_lines(run.stdout)] == [str(SAMPLE), str(work / "good" / "coffee.png")]
    (line,) = run.error_lines
    assert line.startswith(f"error: {bad}: ") and fragments[name] in line
    _assert_clean_errors(run.stderr)


def test_missing_file_and_folder_without_images(model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images here")
    run = run_cli(["classify", "--model", model, tmp_path / "missing.jpg", tmp_path / "empty", SAMPLE])
    assert run.exit_code == 1
    assert len(run.stdout.splitlines()) == 1 and run.stdout.startswith(str(SAMPLE))
    assert run.error_lines[0] == f"error: {tmp_path / 'missing.jpg'}: no such file or directory"
    assert run.error_lines[1].startswith(f"error: {tmp_path / 'empty'}: no images found in this directory")
    assert len(run.error_lines) == 2


def test_a_folder_with_no_images_alone_exits_1(model: Path, tmp_path: Path) -> None:
    run = run_cli(["classify", "--model", model, tmp_path])
    assert run.exit_code == 1 and run.stdout == "" and len(run.error_lines) == 1


def test_unusual_but_valid_images_are_all_classified(model: Path, work: Path) -> None:
    """1x1, 16-bit PNG, CMYK JPEG, animated GIF, RGBA, greyscale, WebP: all classified, exit 0."""
    run = run_cli(["classify", "--model", model, "--json", work / "good"])
    assert run.exit_code == 0, run.stderr
    assert sorted(d["path"] for d in _json_lines(run.stdout)) == sorted(str(p) for p in (work / "good").iterdir())


def test_unreadable_file_subprocess(model: Path, tmp_path_factory) -> None:
    """Permissions are real: as root the CLI runs without the capabilities that bypass them."""
    folder = tmp_path_factory.mktemp("perm")
    shutil.copy(model, folder / "model.onnx")
    shutil.copy(SAMPLE, folder / "ok.jpg")
    shutil.copy(SAMPLE, folder / "locked.jpg")
    (folder / "locked.jpg").chmod(0o000)
    (folder / "closed").mkdir()
    shutil.copy(SAMPLE, folder / "closed" / "x.jpg")
    (folder / "closed").chmod(0o000)
    run = run_subprocess(["classify", "--model", "model.onnx", "--json", "locked.jpg", "closed", "ok.jpg"],
                         cwd=folder, unprivileged=True)
    assert run.exit_code == 1, run.stderr
    assert [d["path"] for d in _json_lines(run.stdout)] == ["ok.jpg"]
    assert len(run.error_lines) == 2, run.stderr
    assert run.error_lines[0].startswith("error: locked.jpg: permission denied")
    assert run.error_lines[1].startswith("error: closed: cannot read directory (Permission denied)")


# ---------------------------------------------------------------- bad models: one line, exit 1, nothing classified


def _write_bad_model(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.onnx"
    if kind == "not_a_model":
        path.write_text("this is a text file, not a model\n" * 10)
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "no_metadata":
        make_fixture_onnx(path, embed=False)
    elif kind == "label_count":
        make_fixture_onnx(path, num_classes=7)
    elif kind == "schema_version":
        make_fixture_onnx(path, metadata={**fixture_metadata(), "schema_version": 99})
    return path


BAD_MODELS = {
    "not_a_model": "not an ONNX or TFLite model file",
    "truncated": "truncated",
    "no_metadata": "has no slidelite metadata",
    "label_count": "metadata has 10 labels but the model output has 7 classes",
    "schema_version": "metadata schema version 99 is not supported",
}


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_bad_model_is_one_line_exit_1(model: Path, tmp_path: Path, kind: str) -> None:
    path = _write_bad_model(kind, tmp_path, model)
    run = run_cli(["classify", "--model", path, SAMPLE])
    assert run.exit_code == 1 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith(f"error: {path}") and BAD_MODELS[kind] in line, line
    _assert_clean_errors(run.stderr)


@pytest.mark.parametrize("model_arg, fragment", [
    ("missing/model.onnx", "missing/model.onnx: model file not found"),
    ("no_such_model_name", "unknown model 'no_such_model_name'"),
])
def test_missing_model(model_arg: str, fragment: str) -> None:
    run = run_cli(["classify", "--model", model_arg, SAMPLE])
    assert run.exit_code == 1 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith(f"error: {fragment}")


# ---------------------------------------------------------------- usage errors: one line, exit 2


@pytest.mark.parametrize("options, fragment", [
    (["--backend", "tensorrt"], "Invalid value for '--backend'"),
    (["--threads", "0"], "Invalid value for '--threads': 0"),
    (["--threads", "-2"], "Invalid value for '--threads': -2"),
    (["--top-k", "-1"], "Invalid value for '--top-k'"),
    (["--threshold", "1.5"], "Invalid value for '--threshold'"),
    (["--json", "--csv"], "--json and --csv cannot be used together"),
    (["--allow", "cat", "--deny", "dog"], "mutually exclusive"),
    (["--allow", "kitten"], "unknown label(s) in the category allowlist: 'kitten'"),
    (["--backend", "litert"], "backend 'litert' cannot run onnx models"),
    (["--no-such-option"], "No such option '--no-such-option'"),
])
def test_usage_errors_exit_2_with_one_line(model: Path, options: list, fragment: str) -> None:
    run = run_cli(["classify", "--model", model, *options, SAMPLE])
    assert run.exit_code == 2 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith("error: ") and fragment in line, line


def test_usage_error_subprocess_is_one_line(model: Path) -> None:
    run = run_subprocess(["classify", "--model", model, "--threads", "0", SAMPLE])
    assert run.exit_code == 2 and run.stdout == ""
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: Invalid value for '--threads'")


def test_no_paths_is_a_usage_error() -> None:
    run = run_cli(["classify"])
    assert run.exit_code == 2 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith("error: Missing argument 'PATH...'; see `") and line.endswith(" classify --help`")


# ---------------------------------------------------------------- signals and pipes (real processes)


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for i in range(400):
        shutil.copy(SAMPLE, folder / f"{i:04d}.jpg")
    return folder


def _start(args: list) -> subprocess.Popen:
    """``python -m slidelite ARGS`` with SIGINT at its default disposition, as from a terminal: pytest-xdist
    workers ignore SIGINT, a child would inherit that, and Python then installs no KeyboardInterrupt handler."""
    return subprocess.Popen([sys.executable, "-m", "slidelite", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_exits_130_with_one_line(model: Path, many_photos: Path) -> None:
    # the folder given 10 times: 4,000 images, so the run cannot finish before the signal lands
    process = _start(["classify", "--model", model, *[many_photos] * 10])
    first = process.stdout.readline()
    assert first.startswith(str(many_photos / "0000.jpg"))
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["error: interrupted"]
    assert len(stdout.splitlines()) < 3999


def test_closed_pipe_stops_quietly(model: Path, many_photos: Path) -> None:
    """`slidelite classify ... | head -1`: 400 JSON lines (~250 KB) overflow the pipe buffer, so the process
    really writes into a closed pipe; it stops with exit 0 and no traceback."""
    process = _start(["classify", "--model", model, "--json", "--top-k", "0", many_photos])
    assert process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert stderr == ""


def test_python_dash_m_and_entry_point_agree(model: Path) -> None:
    script = Path(sys.executable).parent / "slidelite"
    via_module = run_subprocess(["classify", "--model", model, "--json", SAMPLE])
    via_script = subprocess.run([str(script), "classify", "--model", str(model), "--json", str(SAMPLE)],
                                capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    assert via_module.exit_code == via_script.returncode == 0
    strip = lambda text: [{**d, "timings": None} for d in _json_lines(text)]  # noqa: E731
    assert strip(via_module.stdout) == strip(via_script.stdout)
