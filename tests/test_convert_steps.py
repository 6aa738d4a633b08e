"""Each converter step on its own: load, re-parameterize, labels, calibration reader, export + simplify,
quantize, metadata, verify gates, atomic output. Small models (slide_swin_micro) and real photos."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from slidelite.convert import calibration, labels, load, model_metadata, onnx_export, output, quantize, verify
from slidelite.convert.errors import (CalibrationError, ConversionError, LabelsError, ModelBuildError, ModelSpecError,
                                      OutputPathError, ParityError)
from slidelite.convert.job import ConversionJob, PreprocessOverrides
from slidelite.convert.samples import write_sample_photos
from slidelite.errors import UsageError
from slidelite.metadata import ONNX_METADATA_KEY, parse_metadata
from slidelite.preprocess import prepare_input
from tests._convert_fixtures import photo_folder_fixture

pytestmark = pytest.mark.convert


photos = photo_folder_fixture(crops=2)


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return load.load_model(ConversionJob(output=Path("unused.onnx"), model="slide_swin_micro"))


@pytest.fixture(scope="module")
def micro_metadata(micro):
    return model_metadata.build_metadata(micro, labels.resolve_labels(None, micro.num_classes, micro.label_set))


@pytest.fixture(scope="module")
def micro_onnx(tmp_path_factory, micro) -> Path:
    path = tmp_path_factory.mktemp("export") / "micro.onnx"
    deployed = load.reparameterize(micro)
    onnx_export.export_onnx(deployed.module, path, deployed.input_shape(1))
    onnx_export.simplify_onnx(path)
    return path


# ------------------------------------------------------------------------------------------------ load


def test_load_zoo_model_reads_pretrained_cfg(micro):
    assert micro.architecture == "slide_swin_micro"
    assert micro.input_size == (28, 28) and micro.channels == 1 and micro.num_classes == 10
    assert micro.preprocess.color_mode == "L" and micro.preprocess.interpolation == "bilinear"
    assert micro.preprocess.mean == (0.2860,) and micro.label_set == "fashion-mnist"
    assert not micro.module.training


def test_load_module_attr_factory_with_overrides():
    job = ConversionJob(output=Path("x.onnx"), model="slidelite.zoo.slide_swin:slide_swin_micro",
                        preprocess=PreprocessOverrides(input_size=(32, 32), mean=(0.5,), std=(0.25,), crop_pct=1.0,
                                                       interpolation="bicubic", color_mode="L"))
    loaded = load.load_model(job)
    assert loaded.architecture == "slidelite.zoo.slide_swin:slide_swin_micro"
    assert loaded.input_size == (32, 32) and loaded.num_classes == 10
    assert (loaded.preprocess.mean, loaded.preprocess.std, loaded.preprocess.interpolation) == ((0.5,), (0.25,), "bicubic")


def test_load_module_object_without_num_classes_probes_output_width():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Flatten(), torch.nn.LazyLinear(7))
    net(torch.zeros(1, 3, 224, 224))
    loaded = load.load_model(ConversionJob(output=Path("x.onnx"), module=net))
    assert loaded.num_classes == 7 and loaded.architecture == "Sequential" and loaded.input_size == (224, 224)


def test_unknown_zoo_name_suggests_close_names():
    with pytest.raises(ModelSpecError, match="did you mean slide_swin_tiny") as info:
        load.load_model(ConversionJob(output=Path("x.onnx"), model="slide_swin_tiyn"))
    assert info.value.exit_code == 2


@pytest.mark.parametrize("spec, error, message", [
    ("no_such_module_xyz:f", ModelSpecError, "cannot import module"),
    ("slidelite.zoo:slide_swin_micr", ModelSpecError, "has no attribute"),
    ("slidelite.zoo:list_models", ModelBuildError, "list_models() returned a list, not a torch.nn.Module")])
def test_bad_module_attr_is_one_line(spec, error, message):
    with pytest.raises(error, match=re.escape(message)):
        load.load_model(ConversionJob(output=Path("x.onnx"), model=spec))


def test_reparameterize_keeps_outputs(micro):
    x = torch.randn(2, 1, 28, 28)
    deployed = load.reparameterize(micro)
    with torch.no_grad():
        assert torch.allclose(micro.module(x), deployed.module(x), atol=1e-5)
    assert deployed.module is not micro.module and all(m.deployed for m in deployed.module.modules()
                                                       if hasattr(m, "deployed"))


# ------------------------------------------------------------------------------------------------ labels


def test_labels_from_zoo_label_set_and_fallback():
    fmnist = labels.resolve_labels(None, 10, "fashion-mnist")
    assert len(fmnist) == 10 and fmnist[9] == "Ankle boot"
    assert labels.resolve_labels(None, 3, "fashion-mnist") == ("class_0", "class_1", "class_2")


def test_labels_file_with_wrong_line_count_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert labels.resolve_labels(path, 2) == ("cat", "dog")
    with pytest.raises(LabelsError, match=r"2 labels for a model with 10 outputs"):
        labels.resolve_labels(path, 10)
    with pytest.raises(LabelsError, match="not found"):
        labels.resolve_labels(tmp_path / "missing.txt", 2)
    path.write_text("cat\n\ndog\n")
    with pytest.raises(LabelsError, match="line 2 is empty"):
        labels.resolve_labels(path, 3)


# ------------------------------------------------------------------------------------------------ calibration


def test_calibration_set_uses_the_runtime_preprocessing(photos, micro_metadata):
    data = calibration.load_calibration_set(photos, micro_metadata)
    assert data.inputs.shape == (18, 1, 28, 28) and data.inputs.dtype == np.float32
    first = prepare_input(str(data.paths[0]), micro_metadata)
    np.testing.assert_array_equal(data.inputs[:1], first)
    assert not data.skipped


def test_calibration_reader_protocol(photos, micro_metadata):
    data = calibration.load_calibration_set(photos, micro_metadata, max_images=5)
    reader = calibration.ImageFolderReader(data, "input")
    feeds = list(iter(reader.get_next, None))
    assert len(feeds) == 5 == len(reader) and feeds[0]["input"].shape == (1, 1, 28, 28)
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input"], feeds[0]["input"])


def test_undecodable_calibration_images_are_skipped_and_counted(tmp_path, micro_metadata):
    write_sample_photos(tmp_path, crops=0)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    data = calibration.load_calibration_set(tmp_path, micro_metadata)
    assert len(data) == 6 and len(data.skipped) == 2
    assert data.skipped_summary().startswith("skipped 2 calibration file(s)")


def test_missing_empty_and_all_broken_calibration_folders(tmp_path, micro_metadata):
    with pytest.raises(CalibrationError, match="does not exist"):
        calibration.load_calibration_set(tmp_path / "nope", micro_metadata)
    with pytest.raises(CalibrationError, match="holds no image files"):
        calibration.load_calibration_set(tmp_path, micro_metadata)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="none of its 1 image files decoded"):
        calibration.load_calibration_set(tmp_path, micro_metadata)


# ------------------------------------------------------------------------------------------------ export


def test_export_gives_fused_rank4_graph(micro_onnx):
    ops = onnx_export.op_histogram(micro_onnx)
    assert {"LayerNormalization", "Gelu", "Gemm", "Softmax"} <= set(ops)
    assert not {"Erf", "Pow", "Sqrt"} & set(ops), ops  # LayerNorm and Gelu not decomposed
    # the only ReduceMax/Exp are the Slide layers' softmax over the ka^2 neighbours, written out in the
    # channel-first deployed form (ONNX Runtime would transpose around a Softmax on a non-last axis)
    assert ops.get("ReduceMax", 0) == ops.get("Exp", 0) > 0, ops
    assert onnx_export.max_tensor_rank(micro_onnx) == {}
    model = onnx.load(str(micro_onnx))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 28, 28]


def test_export_dynamic_batch(tmp_path, micro):
    path = tmp_path / "dyn.onnx"
    deployed = load.reparameterize(micro)
    onnx_export.export_onnx(deployed.module, path, deployed.input_shape(1), dynamic_batch=True)
    onnx_export.simplify_onnx(path)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    got = onnx_export.onnx_logits(path, x, batch=3)
    np.testing.assert_allclose(got, verify.torch_logits(deployed.module, x), rtol=1e-4, atol=1e-5)


def test_rank_check_reports_5d_tensors(tmp_path):
    class FiveD(torch.nn.Module):
        def forward(self, x):
            return x.reshape(1, 1, 2, 2, 2).sum(dim=(2, 3, 4))

    path = tmp_path / "five.onnx"
    onnx_export.export_onnx(FiveD(), path, (1, 2, 2, 2))
    assert 5 in onnx_export.max_tensor_rank(path).values()


def test_share_identical_initializers(micro_onnx, tmp_path):
    model = onnx.load(str(micro_onnx))
    twin = onnx.helper.make_tensor("twin", onnx.TensorProto.FLOAT, [2], [1.0, 2.0])
    copy = onnx.helper.make_tensor("copy", onnx.TensorProto.FLOAT, [2], [1.0, 2.0])
    model.graph.initializer.extend([twin, copy])
    model.graph.node.extend([onnx.helper.make_node("Add", ["twin", "copy"], ["sum_unused"])])
    assert onnx_export.share_identical_initializers(model) == 1
    assert model.graph.node[-1].input == ["twin", "twin"]


def test_export_failure_is_one_line(tmp_path):
    class LeavesTorch(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(np.sort(x.numpy(), axis=-1)).flatten(1)

    with pytest.raises(ConversionError, match="ONNX export of LeavesTorch failed") as info:
        onnx_export.export_onnx(LeavesTorch(), tmp_path / "bad.onnx", (1, 3, 4, 4))
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert not (tmp_path / "bad.onnx").exists()


# ------------------------------------------------------------------------------------------------ quantize


def test_recipes_are_documented_and_unknown_ones_refused():
    assert quantize.DEFAULT_RECIPE in quantize.RECIPES
    assert all(r.summary for r in quantize.RECIPES.values())
    with pytest.raises(UsageError, match="unknown --int8-recipe 'fastest'; choose one of"):
        quantize.get_recipe("fastest")


@pytest.mark.parametrize("name", sorted(n for n, r in quantize.RECIPES.items() if not r.int8_storage))
def test_every_recipe_quantizes_micro(name, micro_onnx, photos, micro_metadata, tmp_path):
    recipe = quantize.get_recipe(name)
    data = calibration.load_calibration_set(photos, micro_metadata, max_images=8)
    reader = calibration.ImageFolderReader(data, "input") if recipe.static else None
    out = quantize.quantize_onnx(micro_onnx, tmp_path / "int8.onnx", recipe, reader)
    assert out.stat().st_size < 0.5 * micro_onnx.stat().st_size
    ops = onnx_export.op_histogram(out)
    assert {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger"} & set(ops)
    parity = verify.compare_logits(onnx_export.onnx_logits(micro_onnx, data.inputs), onnx_export.onnx_logits(out, data.inputs))
    assert parity.cosine > 0.99, parity


def test_static_recipe_without_calibration_is_refused(micro_onnx, tmp_path):
    static = next(r for r in quantize.RECIPES.values() if r.static)
    with pytest.raises(ConversionError, match="needs calibration images"):
        quantize.quantize_onnx(micro_onnx, tmp_path / "int8.onnx", static, None)


# ------------------------------------------------------------------------------------------------ metadata


def test_metadata_round_trips_and_is_embedded(micro, micro_metadata, micro_onnx, tmp_path):
    meta = model_metadata.build_metadata(micro, micro_metadata.labels, precision="int8", metrics={"fp32_cosine": 1.0})
    again = parse_metadata(meta.to_json())
    assert again == meta and again.provenance.converter_version.startswith("slidelite ")
    assert again.input.height == 28 and again.preprocess.color_mode == "L" and again.labels[0] == "T-shirt/top"
    target = onnx_export.embed_metadata(micro_onnx, meta, tmp_path / "with_meta.onnx")
    props = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert parse_metadata(props[ONNX_METADATA_KEY]) == meta


# ------------------------------------------------------------------------------------------------ verify


def test_compare_logits_definitions():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])
    same = verify.compare_logits(ref, ref)
    assert same.cosine == pytest.approx(1.0) and same.max_rel_err == 0 and same.top1_agreement == 1.0
    off = verify.compare_logits(ref, ref + np.array([[0.0, 0.0, 0.03], [0.0, 3.5, 0.0]]))
    assert off.max_rel_err == pytest.approx(3.5 / 3.0) and off.top1_agreement == 0.5 and off.cosine < 0.9


def test_fp32_gate():
    verify.check_fp32(verify.Parity(4, 0.999995, 5e-5, 1.0), "m.onnx")
    with pytest.raises(ParityError, match="fp32 parity gate failed"):
        verify.check_fp32(verify.Parity(4, 0.99998, 5e-5, 1.0), "m.onnx")
    with pytest.raises(ParityError, match="max relative error 2.00e-04"):
        verify.check_fp32(verify.Parity(4, 1.0, 2e-4, 1.0), "m.onnx")


def test_int8_gate_and_force():
    assert verify.check_int8(verify.Parity(100, 0.999, 0.05, 0.99), "m.onnx", 0.99, False) is None
    with pytest.raises(ParityError, match="agreement 0.950 .* under --min-agreement 0.99"):
        verify.check_int8(verify.Parity(100, 0.99, 0.1, 0.95), "m.onnx", 0.99, False)
    assert "written anyway because of --force" in verify.check_int8(verify.Parity(100, 0.99, 0.1, 0.95), "m.onnx", 0.99, True)


# ------------------------------------------------------------------------------------------------ output


def test_output_collision_and_missing_folder(tmp_path):
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"x")
    with pytest.raises(OutputPathError, match="already exists; pass --overwrite"):
        output.check_output_path(taken, overwrite=False)
    output.check_output_path(taken, overwrite=True)
    with pytest.raises(OutputPathError, match="does not exist"):
        output.check_output_path(tmp_path / "no" / "m.onnx", overwrite=False)
    with pytest.raises(OutputPathError, match="is a folder"):
        output.check_output_path(tmp_path, overwrite=True)
    with pytest.raises(OutputPathError, match="is the --checkpoint file"):
        output.check_output_path(taken, overwrite=True, inputs={"--checkpoint": tmp_path / "." / "taken.onnx"})


def test_staged_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError):
        with output.staged_output(target) as staged:
            staged.write_bytes(b"half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with output.staged_output(target) as staged:
        staged.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["m.onnx"]
