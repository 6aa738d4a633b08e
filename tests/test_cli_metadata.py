"""``slidelite metadata embed`` and the same metadata flags on ``slidelite classify``, on ONNX files written without
slidelite metadata (the runtime's fixture classifier, built with the ``onnx`` helper): fields from the flags and the
graph, the result identical to the file converted with the same metadata, atomic writes, and one-line refusals."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from slidelite import Classifier
from slidelite.metadata import ONNX_METADATA_KEY
from slidelite.model_file import open_model_file
from tests._cli_fixtures import SAMPLE, run_cli
from tests._runtime_fixtures import LABELS, make_fixture_onnx

IMAGENET = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


@pytest.fixture()
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def props(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return {p.key: p.value for p in model.metadata_props}


def test_embed_gives_the_same_classifier_as_the_converted_file(tmp_path, labels):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    reference = make_fixture_onnx(tmp_path / "reference.onnx")  # same graph, metadata written by the fixture
    before = sha256(bare)
    run = run_cli(["metadata", "embed", bare, "--labels", labels, *IMAGENET, "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 0, run.stderr
    assert sha256(bare) == before, "the original must stay untouched without --in-place"
    assert "labels: --labels" in run.stdout and "input_size: model input shape" in run.stdout
    assert "crop_pct: default (timm evaluation transform)" in run.stdout
    assert "output_kind: the graph does not end in a softmax" in run.stdout
    with Classifier.from_file(tmp_path / "out.onnx", max_results=0) as ours, \
            Classifier.from_file(reference, max_results=0) as theirs:
        assert ours.metadata.preprocess == theirs.metadata.preprocess
        assert ours.metadata.labels == LABELS and ours.metadata.output.kind == "logits"
        a, b = ours.classify(SAMPLE), theirs.classify(SAMPLE)
        assert [(c.label, round(c.score, 6)) for c in a.categories] == [(c.label, round(c.score, 6)) for c in b.categories]


def test_classify_flags_give_the_same_result_as_the_embedded_file(tmp_path, labels):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    flags = ["--labels", labels, *IMAGENET, "--crop-pct", "1", "--interpolation", "bilinear"]
    assert run_cli(["metadata", "embed", bare, *flags, "-o", tmp_path / "out.onnx"]).exit_code == 0
    by_flags = run_cli(["classify", "--json", "--model", bare, *flags, SAMPLE])
    embedded = run_cli(["classify", "--json", "--model", tmp_path / "out.onnx", SAMPLE])
    assert by_flags.exit_code == embedded.exit_code == 0, by_flags.stderr + embedded.stderr
    assert json.loads(by_flags.stdout)["categories"] == json.loads(embedded.stdout)["categories"]


def test_the_api_takes_the_same_fields(tmp_path):
    from slidelite.metadata_fields import MetadataFields

    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    reference = make_fixture_onnx(tmp_path / "reference.onnx")
    fields = MetadataFields(labels=LABELS, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with Classifier.from_file(bare, metadata_fields=fields) as ours, Classifier.from_file(reference) as theirs:
        assert ours.metadata.labels == LABELS
        assert ours.classify(SAMPLE).categories == theirs.classify(SAMPLE).categories


def test_flags_replace_fields_of_a_file_with_metadata(tmp_path, labels):
    model = make_fixture_onnx(tmp_path / "m.onnx")
    other = tmp_path / "other.txt"
    other.write_text("\n".join(f"class {i}" for i in range(len(LABELS))), encoding="utf-8")
    run = run_cli(["classify", "--json", "--model", model, "--labels", other, "--crop-pct", "1", "-k", "1", SAMPLE])
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["categories"][0]["label"].startswith("class ")
    with Classifier.from_file(model) as clf:
        assert clf.metadata.preprocess.crop_pct == 0.875  # the file itself is unchanged


def test_flags_keep_the_quantization_of_a_file_with_integer_input_and_output(tmp_path):
    model = make_fixture_onnx(tmp_path / "m.onnx", dtype="uint8", output_dtype="uint8")
    with Classifier.from_file(model, max_results=0) as plain:
        expected = [(c.label, c.score) for c in plain.classify(SAMPLE).categories]
        quantization = (plain.metadata.input.quantization, plain.metadata.output.quantization)
    assert run_cli(["metadata", "embed", model, "--crop-pct", "0.875", "--in-place"]).exit_code == 0
    with Classifier.from_file(model, max_results=0) as again:
        assert (again.metadata.input.quantization, again.metadata.output.quantization) == quantization
        assert [(c.label, c.score) for c in again.classify(SAMPLE).categories] == expected


def test_an_integer_output_without_quantization_is_one_line(tmp_path, labels):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False, output_dtype="uint8")
    run = run_cli(["metadata", "embed", bare, "--labels", labels, *IMAGENET, "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 1 and len(run.error_lines) == 1
    assert "the uint8 output 'scores' has no quantization parameters in the file" in run.stderr


def test_in_place_replaces_the_document_and_keeps_other_properties(tmp_path, labels):
    import onnx

    model = make_fixture_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="author", value="someone")
    onnx.save(proto, str(model))
    run = run_cli(["metadata", "embed", model, "--crop-pct", "0.95", "--in-place"])
    assert run.exit_code == 0, run.stderr
    found = props(model)
    assert found["author"] == "someone" and sorted(found) == ["author", ONNX_METADATA_KEY]
    metadata = open_model_file(model).metadata
    assert metadata.preprocess.crop_pct == 0.95 and metadata.labels == LABELS and metadata.description == "test fixture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "m.onnx"], "no temporary file left behind"


def test_softmax_at_the_end_is_detected(tmp_path, labels):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False, output_kind="probabilities")
    run = run_cli(["metadata", "embed", bare, "--labels", labels, *IMAGENET, "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 0 and "output_kind: the graph ends in a softmax" in run.stdout
    assert open_model_file(tmp_path / "out.onnx").metadata.output.kind == "probabilities"


def test_uint8_input_takes_raw_pixels_without_mean_and_std(tmp_path, labels):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False, dtype="uint8", layout="NHWC")
    run = run_cli(["metadata", "embed", bare, "--labels", labels, "--crop-pct", "1", "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 0, run.stderr
    from PIL import Image

    from slidelite.preprocess import prepare_input, resize_and_crop

    metadata = open_model_file(tmp_path / "out.onnx").metadata
    assert metadata.input.layout == "NHWC" and metadata.input.dtype == "uint8"
    tensor = prepare_input(str(SAMPLE), metadata)
    assert np.array_equal(tensor[0], np.asarray(resize_and_crop(Image.open(SAMPLE).convert("RGB"), metadata)))


@pytest.mark.parametrize("args, expected", [
    ([], "the model has no labels: pass --labels FILE"),
    (["--labels", "LABELS"], "pass --mean and --std"),
    (["--labels", "LABELS", *IMAGENET, "--input-size", "40"],
     "metadata input NCHW [3, 40, 40] does not match the model input shape [?, 3, 32, 32]"),
])
def test_missing_or_wrong_fields_are_one_line_and_nothing_is_written(tmp_path, labels, args, expected):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    args = [labels if a == "LABELS" else a for a in args]
    run = run_cli(["metadata", "embed", bare, *args, "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 1 and len(run.error_lines) == 1 and expected in run.stderr, run.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_wrong_label_count_is_one_line(tmp_path):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n", encoding="utf-8")
    run = run_cli(["classify", "--model", bare, "--labels", three, *IMAGENET, SAMPLE])
    assert run.exit_code == 1 and run.error_lines == [
        f"error: {bare}: metadata has 3 labels but the model output has {len(LABELS)} classes"]


def test_an_ambiguous_layout_names_the_flag(tmp_path, labels):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 36])])
    path = tmp_path / "ambiguous.onnx"
    onnx.save(helper.make_model(graph), str(path))
    run = run_cli(["metadata", "embed", path, "--labels", labels, *IMAGENET, "-o", tmp_path / "out.onnx"])
    assert run.exit_code == 1 and "pass --layout nchw or --layout nhwc" in run.stderr


@pytest.mark.parametrize("args, expected", [
    (["LABELS"], "give either -o OUT or --in-place"),
    (["LABELS", "-o", "OUT", "--in-place"], "give either -o OUT or --in-place"),
    (["LABELS", "-o", "EXISTING"], "exists: pass --overwrite"),
    (["LABELS", "--mean", "a,b", "-o", "OUT"], "--mean 'a,b': expected numbers"),
    (["LABELS", "--input-size", "0x4", "-o", "OUT"], "--input-size '0x4'"),
    (["--labels", "missing.txt", "-o", "OUT"], "--labels missing.txt: labels file not found"),
    (["LABELS", "--layout", "nchwc", "-o", "OUT"], "'nchwc' is not one of"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, labels, args, expected):
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    (tmp_path / "existing.onnx").write_bytes(b"x")
    names = {"LABELS": ["--labels", str(labels)], "OUT": [str(tmp_path / "out.onnx")],
             "EXISTING": [str(tmp_path / "existing.onnx")]}
    argv = [part for a in args for part in names.get(a, [a])]
    run = run_cli(["metadata", "embed", bare, *argv])
    assert run.exit_code == 2 and len(run.error_lines) == 1 and expected in run.stderr, run.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_not_a_model_is_one_line(tmp_path, labels):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model", encoding="utf-8")
    run = run_cli(["metadata", "embed", text, "--labels", labels, "--in-place"])
    assert run.exit_code == 1 and run.error_lines == [f"error: {text}: not an ONNX or TFLite model file"]
    assert text.read_text(encoding="utf-8") == "not a model"


def test_the_group_lists_embed_and_refuses_an_unknown_sub_command_in_one_line():
    shown = run_cli(["metadata"])
    assert shown.exit_code == 0 and "embed" in shown.stdout
    unknown = run_cli(["metadata", "bogus"])
    assert unknown.exit_code == 2 and unknown.error_lines == [
        "error: No such command 'bogus'; see `main metadata --help`"]  # CliRunner names the program 'main'
