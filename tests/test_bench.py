"""``slidelite bench``: the JSON report, --compare interleaving, --with-preprocess, --plot and --adb.

Real models run here (the ONNX fixture classifier on onnxruntime); only ``adb`` is faked, because no
Android device exists. No test asserts a timing: only structure, counts, orderings and consistency.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
import zipfile

import pytest
from click.testing import CliRunner

from slidelite.bench import (BenchSettings, LatencyStats, Target, TargetSpec, timed_rounds, unique_labels,
                             warm_up)
from slidelite.cli import main
from tests._bench_fixtures import adb_calls, install_fake_adb
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx

DEVICE_KEYS = {"machine", "cpu_model", "cores_logical", "cores_physical", "os", "python", "slidelite", "git_commit",
               "loadavg_before", "loadavg_after"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_models")
    return {"a": make_fixture_onnx(folder / "a.onnx"), "b": make_fixture_onnx(folder / "b.onnx", seed=3)}


def invoke(*args):
    result = CliRunner().invoke(main, ["bench", *map(str, args)])
    return result


def check_stats(stats, runs):
    assert stats["count"] == runs
    assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert stats["min"] <= stats["mean"] <= stats["max"]
    assert stats["std"] >= 0


def test_json_report_has_every_field(models):
    result = invoke(models["a"], "--runs", 7, "--warmup", 2, "--threads", 1, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "slidelite.bench" and report["schema_version"] == 1
    assert report["mode"] == "inference" and report["includes_preprocessing"] is False
    assert report["settings"] == {"warmup": 2, "runs": 7, "min_seconds": 0.0, "threads": 1, "with_preprocess": False,
                                  "image": None}
    [target] = report["targets"]
    check_stats(target["latency_ms"], 7)
    assert len(target["samples_ms"]) == 7
    assert target["latency_ms"]["min"] == min(target["samples_ms"])
    assert target["latency_ms"]["max"] == max(target["samples_ms"])
    assert target["throughput_per_s"] == pytest.approx(1000 / target["latency_ms"]["mean"])
    assert target["warmup"]["count"] == 2 and target["warmup"]["mean_ms"] > 0
    assert target["init_ms"] > 0 and target["first_inference_ms"] > 0
    model = target["model"]
    assert model["sha256"] == hashlib.sha256(models["a"].read_bytes()).hexdigest()
    assert model["size_bytes"] == models["a"].stat().st_size
    assert (model["format"], model["precision"], model["input_size"], model["name"]) == ("onnx", "fp32", [32, 32],
                                                                                         "fixture_cnn")
    backend = target["backend"]
    assert backend["name"] == "onnxruntime" and backend["version"]
    assert backend["threads"] == 1 and backend["input_shape"][1:] == [3, 32, 32] and backend["input_dtype"] == "float32"
    assert backend["input_used"] == [1, 3, 32, 32]
    assert report["schedule"] == ["a.onnx"] * 7
    assert report["peak_rss_mb"] > 10
    assert DEVICE_KEYS <= set(report["device"])
    assert report["device"]["cores_logical"] >= 1 and report["device"]["python"] == ".".join(
        map(str, sys.version_info[:3]))


def test_human_table(models):
    result = invoke(models["a"], "--runs", 3, "--warmup", 0)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("inference only", "a.onnx: onnxruntime", "init", "first run", "timed runs   3", "p50", "p99",
                 "throughput", "peak RSS of this process", "device: "):
        assert text in out


def test_compare_runs_interleaved_and_prints_ratios(models):
    result = invoke("--compare", models["a"], f"{models['b']}@onnxruntime", models["a"], "--runs", 4, "--warmup", 1,
                    "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    labels = ["a.onnx", "b.onnx@onnxruntime", "a.onnx#2"]
    assert [t["label"] for t in report["targets"]] == labels
    assert report["interleaved"] is True
    assert report["schedule"] == labels * 4
    for target in report["targets"]:
        check_stats(target["latency_ms"], 4)
        assert target["warmup"]["count"] == 1
    ratios = report["ratios"]
    assert [r["label"] for r in ratios] == labels and all(r["vs"] == "a.onnx" for r in ratios)
    assert ratios[0]["p50_ratio"] == 1.0
    p50 = [t["latency_ms"]["p50"] for t in report["targets"]]
    assert ratios[1]["p50_ratio"] == pytest.approx(p50[1] / p50[0])
    text = invoke("--compare", models["a"], models["b"], "--runs", 2, "--warmup", 0)
    assert "ratios vs a.onnx" in text.stdout and "b.onnx" in text.stdout


def test_compare_keeps_going_when_one_model_is_bad(models, tmp_path):
    missing = tmp_path / "missing.onnx"
    result = invoke("--compare", models["a"], missing, models["b"], "--runs", 2, "--warmup", 0, "--json")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {missing}: model file not found: check the path"]
    report = json.loads(result.stdout)
    assert [t["label"] for t in report["targets"]] == ["a.onnx", "b.onnx"]


def test_with_preprocess_times_the_classify_path_on_a_real_photo(models):
    result = invoke(models["a"], "--with-preprocess", "--runs", 3, "--warmup", 1, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "classify" and report["includes_preprocessing"] is True
    assert report["settings"]["image"].endswith("chelsea.jpg")
    [target] = report["targets"]
    check_stats(target["latency_ms"], 3)
    assert set(target["stages_mean_ms"]) == {"preprocess", "inference", "postprocess"}
    # the stage times are parts of each timed call
    assert sum(target["stages_mean_ms"].values()) <= target["latency_ms"]["mean"]


def test_image_option_implies_preprocess_and_checks_the_file(models, tmp_path):
    from skimage import data
    from PIL import Image

    photo = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(photo)
    report = json.loads(invoke(models["a"], "--image", photo, "--runs", 2, "--warmup", 0, "--json").stdout)
    assert report["includes_preprocessing"] is True and report["settings"]["image"] == str(photo)
    bad = invoke(models["a"], "--image", tmp_path / "nope.jpg", "--runs", 2)
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.jpg'}: --image not found; pass a photo "
                                               "file (jpg, png, ...)"]


@pytest.mark.parametrize("args, message", [
    (["a", "b"], "2 models given: pass --compare"),
    (["--compare", "a"], "--compare needs at least two"),
    (["--serial", "X"], "only apply with --adb"),
    (["--adb", "--compare", "a", "b"], "cannot be combined with --compare"),
    (["a@tensorrt"], "a@tensorrt: unknown backend 'tensorrt'"),
])
def test_usage_errors_are_one_line_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_plot_writes_a_png(models, tmp_path):
    out = tmp_path / "latency.png"
    result = invoke("--compare", models["a"], models["b"], "--runs", 5, "--warmup", 0, "--plot", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {out}" in result.stdout


def test_plot_without_matplotlib_says_how_to_install(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the extra looks like
    out = tmp_path / "latency.png"
    result = invoke(models["a"], "--plot", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        'error: plotting needs matplotlib, which is not installed: pip install "slidelite[plot]"']
    assert result.stdout == "" and not out.exists()


# ------------------------------------------------------------------------------------------ engine


def make_target(label, log, cost_s=0.0):
    def run():
        log.append(label)
        if cost_s:
            time.sleep(cost_s)
    return Target(label=label, spec=TargetSpec(label), run_once=run, init_ms=0.0, model={}, backend={})


def test_min_seconds_keeps_timing_until_the_duration_has_passed():
    log = []
    targets = [make_target("A", log, 0.002), make_target("B", log, 0.002)]
    settings = BenchSettings(warmup=1, min_seconds=0.2)
    assert settings.min_runs == 1
    warm_up(targets, settings)
    start = time.perf_counter()
    schedule = timed_rounds(targets, settings)
    assert time.perf_counter() - start >= 0.2
    assert schedule == ["A", "B"] * (len(schedule) // 2)
    assert log[:4] == ["A", "B", "A", "B"]  # first inference, then the warm-up round, interleaved
    assert len(targets[0].samples_ms) == len(targets[1].samples_ms) == len(schedule) // 2


def test_runs_and_min_seconds_both_bound_the_loop():
    targets = [make_target("A", [])]
    assert timed_rounds(targets, BenchSettings(runs=9)) == ["A"] * 9
    assert BenchSettings().min_runs == 50


def test_latency_stats_percentiles():
    stats = LatencyStats.from_samples([float(v) for v in range(1, 101)])
    assert (stats.count, stats.min, stats.max, stats.mean) == (100, 1.0, 100.0, 50.5)
    assert stats.p50 == pytest.approx(50.5) and stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert stats.throughput == pytest.approx(1000 / 50.5)


def test_target_spec_parsing(tmp_path):
    assert TargetSpec.parse("m.onnx@numpy") == TargetSpec("m.onnx", "numpy")
    assert TargetSpec.parse("m.onnx", "onnxruntime") == TargetSpec("m.onnx", "onnxruntime")
    odd = tmp_path / "user@host"
    odd.mkdir()
    assert TargetSpec.parse(str(odd / "m.onnx")).model == str(odd / "m.onnx")
    assert unique_labels([TargetSpec("x/m.onnx"), TargetSpec("y/m.onnx"), TargetSpec("m.onnx", "numpy")]) == [
        "m.onnx", "m.onnx#2", "m.onnx@numpy"]


@pytest.mark.parametrize("kwargs, message", [
    ({"warmup": -1}, "--warmup"), ({"runs": 0}, "--runs"), ({"min_seconds": float("inf")}, "--min-seconds"),
    ({"threads": 0}, "--threads")])
def test_bad_settings_raise_usage_errors(kwargs, message):
    from slidelite.errors import UsageError

    with pytest.raises(UsageError, match=message):
        BenchSettings(**kwargs)


# ------------------------------------------------------------------------------------------ --adb


def make_tflite(path, metadata=None):
    """A structurally valid (empty) TFLite flatbuffer, with the slidelite metadata appended as a ZIP."""
    header = (12).to_bytes(4, "little") + b"TFL3" + (4).to_bytes(2, "little") + (4).to_bytes(2, "little")
    body = header + (4).to_bytes(4, "little", signed=True)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("slidelite_metadata.json", json.dumps(metadata or fixture_metadata()))
    path.write_bytes(body + archive.getvalue())
    return path


def test_adb_report_from_the_device(tmp_path, monkeypatch):
    model = make_tflite(tmp_path / "model.tflite")
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_nightly_linux_aarch64_mobilenet_v2_percentiles.txt")
    result = invoke(model, "--adb", "--serial", "R5CT", "--threads", 4, "--warmup", 5, "--runs", 50, "--json")
    assert result.exit_code == 0, result.stderr
    calls = adb_calls(log)
    assert calls[2] == ["adb", "-s", "R5CT", "push", str(model), "/data/local/tmp/model.tflite"]
    assert calls[3] == ["adb", "-s", "R5CT", "shell", "/data/local/tmp/benchmark_model",
                        "--graph=/data/local/tmp/model.tflite", "--num_threads=4", "--warmup_runs=5",
                        "--warmup_min_secs=0", "--num_runs=50", "--min_secs=0", "--use_xnnpack=true"]
    report = json.loads(result.stdout)
    assert report["schema"] == "slidelite.bench" and report["device"]["runner"] == "adb"
    assert report["device"]["model"] == "Pixel 7" and report["device"]["serial"] == "R5CT"
    assert report["adb_commands"] == calls
    [target] = report["targets"]
    assert target["latency_ms"] == pytest.approx({"count": 337, "min": 2.605, "mean": 2.94227, "std": 1.19,
                                                   "p50": 2.781, "p90": None, "p99": None, "max": 20.356,
                                                   "p5": 2.647, "p95": 3.169})
    assert target["init_ms"] == pytest.approx(6.395) and target["first_inference_ms"] == pytest.approx(2.761)
    assert target["warmup"] == pytest.approx({"count": 153, "mean_ms": 3.24358})
    assert target["memory_mb"] == pytest.approx({"init_footprint": 39.4531, "overall_footprint": 40.8281,
                                                 "peak": None})
    assert target["backend"]["delegates"] == ["XNNPACK"] and target["backend"]["threads"] == 4
    assert target["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert target["model"]["precision"] == "fp32" and target["model"]["input_size"] == [32, 32]
    text = invoke(model, "--adb", "--threads", 4)
    assert text.exit_code == 0, text.stderr
    assert "device: Google Pixel 7 (SoC Tensor G2, arm64-v8a, Android 14) via adb" in text.stdout
    assert "p50 2.781" in text.stdout and "p90 -" in text.stdout


def test_adb_failure_is_one_line(tmp_path, monkeypatch):
    model = make_tflite(tmp_path / "yolo.tflite")
    install_fake_adb(tmp_path, monkeypatch, "tflite_2.4_android_mi11_nnapi_failed.txt", exit_code=1)
    result = invoke(model, "--adb", "--adb-arg=--use_nnapi=true")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: yolo.tflite on Pixel 7: benchmark_model failed: NN API returned error")


def test_adb_refuses_an_onnx_model(models, tmp_path, monkeypatch):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_2.15_android_synaptics_nnapi.txt")
    result = invoke(models["a"], "--adb")
    assert result.exit_code == 1
    assert "needs a .tflite model" in result.stderr and adb_calls(log) == []


def test_progress_bar_on_long_runs_only(models):
    long = invoke(models["a"], "--runs", 1, "--warmup", 0, "--min-seconds", 2.2, "--progress")
    assert long.exit_code == 0, long.stderr
    assert "timing" in long.stderr
    short = invoke(models["a"], "--runs", 2, "--warmup", 0, "--progress")
    assert short.exit_code == 0 and "timing" not in short.stderr
    quiet = invoke(models["a"], "--runs", 1, "--warmup", 0, "--min-seconds", 2.2, "--no-progress")
    assert quiet.exit_code == 0 and quiet.stderr == ""
