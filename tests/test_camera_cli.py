"""``slidelite camera`` as users run it: a subprocess fed a real video file or image folder, stopped by
SIGTERM / Ctrl-C, --max-frames or the end of the file; JSON lines, the MJPEG preview, bad inputs, and
a machine without OpenCV."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from io import BytesIO
from pathlib import Path
from typing import List

import pytest
from PIL import Image

pytest.importorskip("cv2", reason="the camera extra (opencv-python-headless) is installed by scripts/test.sh")

from _camera_fixtures import FRAME_SIZE, PHOTOS, make_image_folder, make_video  # noqa: E402
from _runtime_fixtures import make_fixture_onnx  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("camera_cli")
    return {"model": str(make_fixture_onnx(root / "model.onnx")), "video": str(make_video(root / "clip.mp4")),
            "folder": str(make_image_folder(root / "photos")), "root": root}


def camera_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(extra)
    return env


def start(media, *args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "slidelite", "camera", "--model", media["model"], *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or camera_env())


def camera(media, *args: str, env=None) -> subprocess.CompletedProcess:
    process = start(media, *args, env=env)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def json_lines(text: str) -> List[dict]:
    return [json.loads(line) for line in text.splitlines()]


def check_accounting(records: List[dict]) -> dict:
    """The last line is the summary; every frame line before it was classified; the counts add up."""
    frames, summary = records[:-1], records[-1]["summary"]
    assert all("frame" in r for r in frames)
    assert summary["classified"] == len(frames)
    assert summary["classified"] + summary["dropped"] == summary["delivered"]
    assert summary["errors"] == 0
    return summary


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_stops_cleanly_with_a_summary(media, signum):
    process = start(media, "--source", media["video"], "--loop", "--source-fps", "60", "--headless", "--json")
    first = process.stdout.readline()  # the stream is running
    process.send_signal(signum)
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = check_accounting(json_lines(first + rest))
    assert summary["classified"] >= 1


def test_max_frames_json_lines(media):
    done = camera(media, "--source", media["video"], "--source-fps", "0", "--loop", "--max-frames", "7",
                  "--headless", "--json")
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stdout)
    summary = check_accounting(records)
    assert summary["classified"] == 7
    for record in records[:-1]:
        assert set(record) == {"frame", "timestamp", "categories", "latency_ms", "age_ms", "dropped"}
        assert [set(c) for c in record["categories"]] == [{"index", "label", "score"}] * 3
    assert set(summary) >= {"delivered", "classified", "dropped", "errors", "reopens", "fps", "mean_latency_ms"}


def test_headless_text_lines_and_summary_on_stderr(media):
    done = camera(media, "--source", media["folder"], "--source-fps", "0", "--headless")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("frame ") for line in lines)
    summary = [line for line in done.stderr.splitlines() if line.startswith("summary:")]
    assert len(summary) == 1 and f"delivered {len(PHOTOS)}" in summary[0]


def test_mjpeg_preview_serves_annotated_frames(media):
    process = start(media, "--source", media["video"], "--loop", "--source-fps", "30", "--headless",
                    "--preview-port", "0")
    try:
        line = process.stderr.readline()
        assert "preview on http://127.0.0.1:" in line, line
        url = line.split("preview on ")[1].strip()
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"/stream.mjpg" in page.read()
        with urllib.request.urlopen(url + "frame.jpg", timeout=30) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg"
            picture = Image.open(BytesIO(reply.read()))
        with urllib.request.urlopen(url + "stream.mjpg", timeout=30) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert stream.read(20000).count(b"Content-Type: image/jpeg") >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert picture.size == FRAME_SIZE
    gray = picture.convert("L")
    assert gray.crop((0, 0, FRAME_SIZE[0], 10)).getextrema()[0] < 30  # the overlay's dark band


def test_bad_source_is_one_line_and_exit_1(media, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2048))
    for source, problem in ((str(tmp_path / "nope.mp4"), "no such file or folder"), (str(junk), "cannot decode")):
        done = camera(media, "--source", source, "--headless")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [done.stderr.strip()] and problem in done.stderr
        assert source in done.stderr


def test_bad_resolution_is_a_usage_error(media):
    done = camera(media, "--source", media["folder"], "--resolution", "640by480")
    assert done.returncode == 2 and "WIDTHxHEIGHT" in done.stderr


def test_corrupt_frames_exit_1_after_classifying_the_rest(media, tmp_path):
    folder = make_image_folder(tmp_path / "photos")
    (folder / "02b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    done = camera(media, "--source", str(folder), "--source-fps", "0", "--headless", "--json")
    assert done.returncode == 1
    summary = json_lines(done.stdout)[-1]["summary"]
    assert summary["errors"] == 1 and summary["delivered"] == len(PHOTOS)
    assert "02b_broken.png" in done.stderr and "Traceback" not in done.stderr


def test_without_opencv_folders_work_and_video_asks_for_the_extra(media, tmp_path):
    blocker = tmp_path / "no_cv2"
    blocker.mkdir()
    (blocker / "cv2.py").write_text("raise ImportError('OpenCV is hidden for this test')\n")
    env = camera_env(PYTHONPATH=str(blocker))
    video = camera(media, "--source", media["video"], "--headless", env=env)
    assert video.returncode == 1
    assert video.stderr.strip().count("\n") == 0
    assert 'pip install "slidelite[camera]"' in video.stderr and "Traceback" not in video.stderr
    folder = camera(media, "--source", media["folder"], "--source-fps", "0", "--headless", "--json", env=env)
    assert folder.returncode == 0, folder.stderr
    assert check_accounting(json_lines(folder.stdout))["delivered"] == len(PHOTOS)


def test_camera_help_lists_the_options():
    done = subprocess.run([sys.executable, "-m", "slidelite", "camera", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--source", "--model", "--headless", "--json", "--max-frames", "--loop", "--record",
                   "--preview-port", "--backoff-initial"):
        assert option in done.stdout


UNIT = Path(__file__).resolve().parents[1] / "apps" / "slidelite-camera.service"


def unit_exec_start() -> List[str]:
    import shlex

    lines = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    return shlex.split(lines[0].split("=", 1)[1])


def test_systemd_unit_command_line_is_accepted_by_the_cli():
    from slidelite.cli.camera import command

    argv = unit_exec_start()
    assert argv[0].endswith("/bin/slidelite") and argv[1] == "camera"
    context = command.make_context("camera", argv[2:])  # raises on an unknown or malformed option
    assert context.params["source"] == "picamera" and context.params["headless"] and context.params["as_json"]
    assert "KillSignal=SIGTERM" in UNIT.read_text().splitlines()


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    import shutil

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    venv_bin = Path(sys.executable).parent
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(unit_exec_start()[0], str(venv_bin / "slidelite"))
                    .replace("WorkingDirectory=/home/pi", f"WorkingDirectory={tmp_path}"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
