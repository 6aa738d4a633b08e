"""``slidelite.bench_adb``: the ``benchmark_model`` output parser (on real published outputs) and the adb
command lines (against a fake ``adb`` that records its arguments; no device exists here)."""
from __future__ import annotations

import pytest

from slidelite.bench_adb import (AdbError, AdbSettings, BenchmarkOutputError, benchmark_command,
                                 parse_benchmark_output, run_on_device)
from tests._bench_fixtures import FIXTURES, adb_calls, device_prop_dict, fixture_text, install_fake_adb

# Expected values read by hand from each fixture (microseconds in the text, milliseconds here).
EXPECTED = {
    "tflite_riscv64_mobilenet_v1_op_profiling.txt": dict(
        tool="tflite", init_ms=17.187, first_inference_ms=3512.391, warmup_mean_ms=3512.39,
        inference=dict(count=50, first=2990.275, min=2727.568, max=3189.954, mean=2950.34, std=109.798,
                       median=None),
        warmup_count=1, init_footprint_mb=4.21094, overall_footprint_mb=46.0859, model_size_mb=16.9008,
        threads=4, graph="./mobilenet_v1_1.0_224.tflite", delegates=[], requested_runs=50),
    "tflite_2.4_android_mi11_yolov5s_fp32_cpu.txt": dict(
        tool="tflite", init_ms=16.242, first_inference_ms=360.262, warmup_mean_ms=304.586,
        inference=dict(count=50, first=249.042, min=247.067, max=254.474, mean=249.684, std=1.442, median=None),
        warmup_count=None, init_footprint_mb=4.92969, overall_footprint_mb=138.809, model_size_mb=None,
        threads=None, graph=None, delegates=[], requested_runs=None),
    "tflite_2.15_android_synaptics_nnapi.txt": dict(
        tool="tflite", init_ms=66.002, first_inference_ms=637.079, warmup_mean_ms=637.079,
        inference=dict(count=520, first=2.531, min=1.171, max=9.925, mean=1.88574, std=0.870, median=None),
        warmup_count=1, init_footprint_mb=7.40234, overall_footprint_mb=7.83203, model_size_mb=0.497264,
        threads=None, graph="/data/local/tmp/mobilenet_v1_0.25_224_quant.tflite", delegates=["NNAPI"],
        requested_runs=50, tflite_version="2.15.0", delegated_nodes="31/31 (TfLiteNnapiDelegate)"),
    "tflite_nightly_linux_aarch64_mobilenet_v2_percentiles.txt": dict(
        tool="tflite", init_ms=6.395, first_inference_ms=2.761, warmup_mean_ms=3.24358,
        inference=dict(count=337, first=2.881, min=2.605, max=20.356, mean=2.94227, std=1.190, median=2.781,
                       p5=2.647, p95=3.169),
        warmup_count=153, init_footprint_mb=39.4531, overall_footprint_mb=40.8281, model_size_mb=13.9193,
        threads=4, graph="mobilenet_v2_224.tflite", delegates=["XNNPACK"], requested_runs=50),
    "litert_linux_x86_64_blaze_face_benchmark_results.txt": dict(
        tool="litert", init_ms=5.757, first_inference_ms=2.125, warmup_mean_ms=0.949861,
        inference=dict(count=1054, first=1.015, min=0.910, max=1.102, mean=0.947132, std=0.023, median=0.942,
                       p5=0.915, p95=0.991),
        warmup_count=526, init_footprint_mb=4.06, overall_footprint_mb=7.07, model_size_mb=0.229746,
        threads=4, graph=None, delegates=["XNNPACK"], requested_runs=50),
}


def test_every_fixture_has_expectations():
    stored = {path.name for path in FIXTURES.glob("*.txt")}
    assert stored == set(EXPECTED) | {"tflite_2.4_android_mi11_nnapi_failed.txt"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_reads_real_outputs(name):
    want = EXPECTED[name]
    got = parse_benchmark_output(fixture_text(name), name)
    assert got.tool == want["tool"]
    for key in ("init_ms", "first_inference_ms", "warmup_mean_ms", "init_footprint_mb", "overall_footprint_mb",
                "model_size_mb"):
        assert got.__dict__[key] == pytest.approx(want[key]) if want[key] is not None else got.__dict__[key] is None
    for key, value in want["inference"].items():
        actual = getattr(got.inference, key)
        assert (actual is None) if value is None else actual == pytest.approx(value), key
    assert (got.warmup.count if got.warmup else None) == want["warmup_count"]
    assert got.threads == want["threads"]
    assert got.graph == want["graph"]
    assert got.delegates == want["delegates"]
    assert got.requested_runs == want["requested_runs"]
    assert got.tflite_version == want.get("tflite_version")
    assert got.delegated_nodes == want.get("delegated_nodes")
    assert got.inference.min <= got.inference.mean <= got.inference.max


def test_op_profiling_table_is_not_taken_for_run_statistics():
    # The profiling summary repeats a "count=50 … avg=2.9499e+06" line; the run statistics say 2.95034e+06.
    got = parse_benchmark_output(fixture_text("tflite_riscv64_mobilenet_v1_op_profiling.txt"))
    assert got.inference.mean == pytest.approx(2950.34)
    assert got.inference.max == pytest.approx(3189.954)


def test_single_warmup_run_line_is_understood():
    got = parse_benchmark_output(fixture_text("tflite_2.15_android_synaptics_nnapi.txt"))
    assert got.warmup.count == 1
    assert got.warmup.first == got.warmup.min == got.warmup.max == pytest.approx(637.079)


def test_failed_run_raises_with_the_device_error():
    with pytest.raises(BenchmarkOutputError) as info:
        parse_benchmark_output(fixture_text("tflite_2.4_android_mi11_nnapi_failed.txt"), "yolov5s on mi11")
    message = str(info.value)
    assert message.startswith("yolov5s on mi11: benchmark_model failed: NN API returned error ANEURALNETWORKS_OP_FAILED")
    assert "Benchmarking failed." in message
    assert "\n" not in message


def test_output_without_timings_is_refused():
    with pytest.raises(BenchmarkOutputError, match="printed no inference timings.*'Segmentation fault'"):
        parse_benchmark_output("STARTING!\nLoaded model x.tflite\nSegmentation fault\n", "x")


def test_windows_line_endings_from_adb_are_accepted():
    text = fixture_text("tflite_nightly_linux_aarch64_mobilenet_v2_percentiles.txt").replace("\n", "\r\n")
    assert parse_benchmark_output(text).inference.median == pytest.approx(2.781)


# ------------------------------------------------------------------------------------- adb commands


@pytest.fixture
def tflite_model(tmp_path):
    path = tmp_path / "my model.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    return path


def test_adb_command_lines(tmp_path, monkeypatch, tflite_model):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_nightly_linux_aarch64_mobilenet_v2_percentiles.txt")
    settings = AdbSettings(serial="R5CT1234", threads=2, warmup=3, runs=20)
    out = run_on_device(tflite_model, settings)
    remote = "/data/local/tmp/my model.tflite"
    assert adb_calls(log) == [
        ["adb", "-s", "R5CT1234", "shell", "getprop ro.product.model; getprop ro.product.manufacturer; "
         "getprop ro.soc.model; getprop ro.board.platform; getprop ro.product.cpu.abi; "
         "getprop ro.build.version.release; getprop ro.build.version.sdk"],
        ["adb", "-s", "R5CT1234", "shell", "test -x /data/local/tmp/benchmark_model && echo found"],
        ["adb", "-s", "R5CT1234", "push", str(tflite_model), remote],
        ["adb", "-s", "R5CT1234", "shell", "/data/local/tmp/benchmark_model", "'--graph=/data/local/tmp/my model.tflite'",
         "--num_threads=2", "--warmup_runs=3", "--warmup_min_secs=0", "--num_runs=20", "--min_secs=0",
         "--use_xnnpack=true"],
        ["adb", "-s", "R5CT1234", "shell", "rm", "-f", "'/data/local/tmp/my model.tflite'"],
    ]
    assert out["commands"] == adb_calls(log)
    assert out["device"] == {"serial": "R5CT1234", **device_prop_dict()}
    assert out["result"].inference.count == 337
    assert out["result"].inference.median == pytest.approx(2.781)


def test_no_serial_means_no_dash_s_and_binary_found_on_path(tmp_path, monkeypatch, tflite_model):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_2.15_android_synaptics_nnapi.txt", binaries="benchmark_model")
    run_on_device(tflite_model, AdbSettings(affinity="f0", extra_args=("--use_nnapi=true",)))
    calls = adb_calls(log)
    assert all("-s" not in call for call in calls)
    assert calls[1][-1] == "test -x /data/local/tmp/benchmark_model && echo found"
    assert calls[2][-1] == "command -v benchmark_model && echo found"
    run = calls[4]
    assert run[:5] == ["adb", "shell", "taskset", "f0", "benchmark_model"]
    assert "--use_nnapi=true" == run[-1]
    assert not any(word.startswith("--num_threads") for word in run)


def test_host_binary_is_pushed_and_made_executable(tmp_path, monkeypatch, tflite_model):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_2.15_android_synaptics_nnapi.txt", binaries="")
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    run_on_device(tflite_model, AdbSettings(serial="emulator-5554", binary=str(binary)))
    calls = adb_calls(log)
    assert calls[1] == ["adb", "-s", "emulator-5554", "push", str(binary), "/data/local/tmp/benchmark_model"]
    assert calls[2] == ["adb", "-s", "emulator-5554", "shell", "chmod", "755", "/data/local/tmp/benchmark_model"]


def test_missing_binary_on_device_is_one_clear_error(tmp_path, monkeypatch, tflite_model):
    install_fake_adb(tmp_path, monkeypatch, "tflite_2.15_android_synaptics_nnapi.txt", binaries="")
    with pytest.raises(AdbError, match=r"benchmark_model not found on the device .*--benchmark-binary PATH"):
        run_on_device(tflite_model, AdbSettings())


def test_device_failure_is_reported_and_model_removed(tmp_path, monkeypatch, tflite_model):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_2.4_android_mi11_nnapi_failed.txt", exit_code=1)
    with pytest.raises(BenchmarkOutputError, match="my model.tflite on Pixel 7: benchmark_model failed: NN API"):
        run_on_device(tflite_model, AdbSettings())
    assert adb_calls(log)[-1][:4] == ["adb", "shell", "rm", "-f"]


def test_onnx_model_is_refused_before_touching_adb(tmp_path, monkeypatch):
    log = install_fake_adb(tmp_path, monkeypatch, "tflite_2.15_android_synaptics_nnapi.txt")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    with pytest.raises(AdbError, match=r"m.onnx: --adb .* needs a .tflite model"):
        run_on_device(model, AdbSettings())
    assert adb_calls(log) == []


def test_missing_adb_is_one_clear_error(tmp_path, monkeypatch, tflite_model):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AdbError, match="adb: not found on PATH; install Android platform-tools"):
        run_on_device(tflite_model, AdbSettings())


def test_benchmark_command_defaults():
    words = benchmark_command("/data/local/tmp/benchmark_model", "/data/local/tmp/m.tflite", AdbSettings())
    assert words == ["/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/m.tflite", "--warmup_runs=1",
                     "--warmup_min_secs=0", "--num_runs=50", "--min_secs=0", "--use_xnnpack=true"]
