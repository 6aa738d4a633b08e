"""The camera app's LIVE_STREAM pipeline and sources, driven in-process by a real video file, a real image
folder (scikit-image photos) and the real fixture ONNX classifier."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2", reason="the camera extra (opencv-python-headless) is installed by scripts/test.sh")

from slidelite import Classifier  # noqa: E402
from slidelite.apps.camera import CameraConfig, run  # noqa: E402
from slidelite.apps.overlay import draw_overlay, overlay_text  # noqa: E402
from slidelite.apps.pipeline import (Backoff, Frame, LatestFrameMailbox, LiveStream,  # noqa: E402
                                     OverlapPolicy, StreamSettings)
from slidelite.apps.sources import (FolderSource, SourceError, VideoFileSource, make_source)  # noqa: E402
from slidelite.results import Category, ClassificationResult  # noqa: E402

from _camera_fixtures import FRAME_SIZE, PHOTOS, make_image_folder, make_video  # noqa: E402
from _runtime_fixtures import make_fixture_onnx  # noqa: E402

VIDEO_FRAMES = 12 * len(PHOTOS)
FAST_REOPEN = Backoff(initial_s=0.01, maximum_s=0.04)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A fixture model, a 48-frame video and a 4-photo folder."""
    root = tmp_path_factory.mktemp("camera")
    return {"model": str(make_fixture_onnx(root / "model.onnx")), "video": str(make_video(root / "clip.mp4")),
            "folder": str(make_image_folder(root / "photos"))}


@pytest.fixture(scope="module")
def classifier(media):
    with Classifier.from_file(media["model"]) as clf:
        yield clf


def run_json(media, **overrides):
    """Run the app headless with JSON lines; return (stats, failure, frame records)."""
    out = io.StringIO()
    config = CameraConfig(model=media["model"], headless=True, json=True, **overrides)
    stats, failure = run(config, stdout=out)
    return stats, failure, [json.loads(line) for line in out.getvalue().splitlines()]


def camera_threads():
    return [t for t in threading.enumerate() if t.name.startswith("slidelite-")]


def read_all(source):
    """Every frame up to EOF."""
    frames = []
    while (image := source.read()) is not None:
        frames.append(image)
    return frames


def frame(index: int) -> Frame:
    return Frame(index, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8))


# -- mailbox ----------------------------------------------------------------------------------------
def test_mailbox_keeps_only_the_newest_frame():
    box = LatestFrameMailbox()
    for i in range(3):
        box.put(frame(i))
    assert box.take().index == 2
    assert (box.delivered, box.dropped) == (3, 2)


def test_mailbox_close_discards_or_drains():
    box = LatestFrameMailbox()
    box.put(frame(0))
    box.close()  # end of stream: the waiting frame is still handed out
    assert box.take().index == 0 and box.take() is None
    box = LatestFrameMailbox()
    box.put(frame(0))
    box.close(discard=True)  # stop(): the waiting frame is dropped
    box.put(frame(1))  # a frame captured after the stop is dropped too
    assert box.take() is None
    assert (box.delivered, box.dropped) == (2, 2)


def test_backoff_doubles_up_to_its_cap():
    delays = Backoff(initial_s=0.5, maximum_s=3.0).delays()
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


# -- sources ----------------------------------------------------------------------------------------
def test_video_source_reads_every_frame_then_reports_eof(media):
    with VideoFileSource(media["video"]) as source:
        shapes = {f.shape for f in read_all(source)}
        assert source.position == VIDEO_FRAMES
        assert source.read() is None  # still EOF, not a failure
        source.rewind()
        assert source.read() is not None
    assert shapes == {(FRAME_SIZE[1], FRAME_SIZE[0], 3)}
    assert source.fps == pytest.approx(30.0)


def test_video_source_frames_are_rgb(media):
    with VideoFileSource(media["video"]) as source:
        first = source.read().astype(int)
    from _camera_fixtures import photo_frames
    assert np.abs(first - photo_frames(PHOTOS[:1])[0]).mean() < 8  # BGR order would be off by ~50


def test_folder_source_yields_images_in_name_order(media):
    with FolderSource(media["folder"]) as source:
        frames = read_all(source)
    assert len(frames) == len(PHOTOS)
    assert [f.shape[:2] for f in frames] == [(FRAME_SIZE[1], FRAME_SIZE[0])] * len(PHOTOS)


def test_make_source_picks_by_kind(media, tmp_path):
    assert isinstance(make_source(media["video"]), VideoFileSource)
    assert isinstance(make_source(media["folder"]), FolderSource)
    assert make_source("2").name == "camera 2"
    with pytest.raises(SourceError, match="no such file or folder"):
        make_source(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        FolderSource(str(empty)).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(str(junk)).open()


# -- the whole app, in-process ----------------------------------------------------------------------
def test_unpaced_video_every_frame_is_classified_or_dropped(media):
    stats, failure, records = run_json(media, source=media["video"], source_fps=0)
    assert failure is None and stats.errors == 0
    assert stats.delivered == VIDEO_FRAMES
    assert stats.classified == len(records) >= 1
    assert stats.classified + stats.dropped == stats.delivered
    indices = [r["frame"] for r in records]
    assert indices == sorted(set(indices))
    assert indices[-1] == VIDEO_FRAMES - 1  # at EOF the newest frame is classified, not dropped
    assert records[-1]["dropped"] == stats.dropped
    assert all(len(r["categories"]) == 3 and r["latency_ms"] > 0 for r in records)


def test_folder_results_match_classifying_the_files(media, classifier):
    stats, failure, records = run_json(media, source=media["folder"], source_fps=2000)
    assert failure is None and stats.classified + stats.dropped == stats.delivered == len(PHOTOS)
    files = sorted(Path(media["folder"]).iterdir())
    for record in records:
        # the decoded pixels of the file (classifying the path itself may decode a JPEG at a reduced scale)
        expected = classifier.classify(np.asarray(Image.open(files[record["frame"]]).convert("RGB"))).categories[:3]
        assert [c["label"] for c in record["categories"]] == [c.label for c in expected]
        assert [c["score"] for c in record["categories"]] == pytest.approx([c.score for c in expected], abs=1e-6)


def test_max_frames_with_loop_stops_after_n_classified(media):
    stats, failure, records = run_json(media, source=media["video"], source_fps=0, loop=True, max_frames=60)
    assert failure is None
    assert stats.classified == len(records) == 60
    assert stats.delivered > VIDEO_FRAMES  # it must have started the file over
    assert stats.classified + stats.dropped == stats.delivered
    assert not camera_threads()


def test_unreadable_image_is_counted_and_skipped(media, tmp_path):
    folder = Path(shutil.copytree(media["folder"], tmp_path / "photos"))
    (folder / "01b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    stats, failure, records = run_json(media, source=str(folder), source_fps=2000)
    assert failure is None
    assert stats.errors_read == 1 and stats.errors == 1
    assert stats.delivered == len(PHOTOS)
    assert stats.classified + stats.dropped == stats.delivered


def test_classifier_failures_are_counted_and_the_stream_goes_on(media, classifier):
    class FlakyClassifier:
        """The real classifier, made to fail in preprocessing on every third frame and in the model run on every
        fourth prepared one (per-frame failure injection in both pipeline stages)."""

        prepares = runs = 0

        def prepare(self, image):
            self.prepares += 1
            if self.prepares % 3 == 0:
                raise RuntimeError("injected preprocessing failure")
            return classifier.prepare(image)

        def classify_prepared(self, prepared):
            self.runs += 1
            if self.runs % 4 == 0:
                raise RuntimeError("injected inference failure")
            return classifier.classify_prepared(prepared)

    flaky, results = FlakyClassifier(), []
    source = VideoFileSource(media["video"])
    source.open()
    # paced like a camera, so a loaded machine cannot drop all but a couple of frames before both stages fail once
    stream = LiveStream(source, flaky, results.append, StreamSettings(pace_fps=30))
    stream.start()
    stats = _finish(stream)
    assert stream.failure is None
    assert flaky.runs >= 4 and stats.errors_classify == flaky.prepares // 3 + flaky.runs // 4
    assert stats.classified == len(results) == flaky.runs - flaky.runs // 4
    assert stats.classified + stats.errors_classify + stats.dropped == stats.delivered == VIDEO_FRAMES


class _WaitsForPrepares:
    """The real classifier whose model run waits (up to ``timeout`` s) until ``lead`` more frames than it has run
    were taken for preparing; ``met`` counts the runs whose wait ended that way (not by the timeout)."""

    def __init__(self, classifier, lead: int, timeout: float) -> None:
        self.classifier, self.lead, self.timeout = classifier, lead, timeout
        self.prepares, self.runs, self.met = 0, 0, 0
        self.changed = threading.Condition()

    def prepare(self, image):
        with self.changed:
            self.prepares += 1
            self.changed.notify_all()
        return self.classifier.prepare(image)

    def classify_prepared(self, prepared):
        with self.changed:
            self.runs += 1
            if self.changed.wait_for(lambda: self.prepares > self.runs + self.lead - 1, timeout=self.timeout):
                self.met += 1
        return self.classifier.classify_prepared(prepared)


def test_the_next_frame_is_prepared_while_the_model_runs(media, classifier):
    """Each model run waits until the next frame's preprocessing has begun: that only happens if the two stages
    overlap; run one after the other, every wait would time out."""
    overlapping, results = _WaitsForPrepares(classifier, lead=1, timeout=10.0), []
    source = VideoFileSource(media["video"])
    source.open()
    stream = LiveStream(source, overlapping, results.append, StreamSettings(max_frames=5, loop=True))
    stream.start()
    stats = _finish(stream)
    assert stream.failure is None and stats.classified == len(results) == 5
    assert overlapping.met == overlapping.runs == 5


def test_overlap_policy_prepares_ahead_while_preparing_takes_over_half_an_inference():
    policy = OverlapPolicy(0.5, smoothing=0.5)
    assert not policy.ahead  # nothing prepared yet
    policy.prepared(0.004)
    assert policy.ahead  # prepared, but the model has not run yet
    policy.inferred(0.010)
    assert not policy.ahead  # 4 ms of a 10 ms inference
    policy.prepared(0.010)  # average 7 ms
    assert policy.ahead
    policy.inferred(0.020)  # average 15 ms
    assert not policy.ahead
    never = OverlapPolicy(None)
    never.prepared(1.0)
    never.inferred(0.001)
    assert not never.ahead


@pytest.mark.parametrize("mode,ahead", [("always", True), ("never", False)])
def test_frames_are_prepared_ahead_only_when_asked(media, classifier, mode, ahead):
    """Each model run waits until two more frames than it has run were taken for preparing: the one waiting in the
    hand-over slot and the next. Only a prepare thread that works ahead gets there (just in time, it takes the next
    frame once the model has taken the waiting one)."""
    counting, results = _WaitsForPrepares(classifier, lead=2, timeout=10.0 if ahead else 0.2), []
    source = VideoFileSource(media["video"])
    source.open()
    stream = LiveStream(source, counting, results.append, StreamSettings(max_frames=4, loop=True, prepare_ahead=mode))
    stream.start()
    stats = _finish(stream)
    assert stream.failure is None and stats.classified == len(results) == 4
    assert counting.met == (4 if ahead else 0)
    assert (stats.prepared_ahead >= 4) if ahead else stats.prepared_ahead == 0
    assert stats.delivered == stats.classified + stats.errors + stats.dropped


def _finish(stream: LiveStream):
    while not stream.wait(0.1):
        pass
    return stream.join()


class VanishingFolder(FolderSource):
    """A real outage: after ``vanish_after`` images the folder is renamed away, so reads and the first
    ``outage`` reopen attempts fail on the file system; the attempt after that finds it back."""

    def __init__(self, folder: str, vanish_after: int, outage: int) -> None:
        super().__init__(folder)
        self.vanish_after, self.outage = vanish_after, outage
        self.failed_opens = 0
        self.hidden = folder + ".away"

    def read(self):
        if self.position == self.vanish_after and os.path.isdir(self.folder) and not self.failed_opens:
            os.rename(self.folder, self.hidden)
        return super().read()

    def open(self):
        if os.path.isdir(self.hidden):
            self.failed_opens += 1
            if self.failed_opens > self.outage:
                os.rename(self.hidden, self.folder)
        super().open()


def test_source_failure_is_reopened_with_backoff_and_resumes(media, classifier, tmp_path):
    folder = str(shutil.copytree(media["folder"], tmp_path / "photos"))
    source = VanishingFolder(folder, vanish_after=2, outage=3)
    source.open()
    stream = LiveStream(source, classifier, lambda item: None, StreamSettings(backoff=FAST_REOPEN))
    stream.start()
    stats = _finish(stream)
    assert stream.failure is None
    assert stats.reopen_failures == 3 and stats.reopens == 1
    assert stats.delivered == len(PHOTOS)  # resumed at the image that failed: none lost, none repeated
    assert stats.classified + stats.dropped == stats.delivered and stats.errors == 0


def test_source_that_stays_down_gives_up_after_the_allowed_attempts(media, classifier, tmp_path):
    folder = str(shutil.copytree(media["folder"], tmp_path / "photos"))
    source = VanishingFolder(folder, vanish_after=1, outage=100)
    source.open()
    settings = StreamSettings(backoff=FAST_REOPEN, max_reopen_attempts=4)
    stream = LiveStream(source, classifier, lambda item: None, settings)
    stream.start()
    stats = _finish(stream)
    assert isinstance(stream.failure, SourceError) and "gave up after 4" in str(stream.failure)
    assert stats.reopen_failures == 4 and stats.reopens == 0
    assert stats.classified + stats.dropped == stats.delivered == 1
    assert not camera_threads()


def test_sigterm_stops_the_app_cleanly_in_process(media):
    assert threading.current_thread() is threading.main_thread()  # else the signal would end pytest itself
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    stats, failure, records = run_json(media, source=media["video"], loop=True, source_fps=100)
    timer.join()
    assert failure is None
    assert stats.classified == len(records) > 0
    assert stats.classified + stats.dropped == stats.delivered
    assert not camera_threads()
    assert signal.getsignal(signal.SIGTERM) is previous  # the app's handler is removed again


def test_recording_holds_every_classified_frame(media, tmp_path):
    import cv2

    out = tmp_path / "annotated.mp4"
    stats, failure, _ = run_json(media, source=media["folder"], source_fps=2000, record=str(out))
    assert failure is None
    capture = cv2.VideoCapture(str(out))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = capture.read()
    capture.release()
    assert ok and count == stats.classified
    assert first.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert first[:10].mean() < 60 < first[60:].mean()  # the dark overlay band over a bright photo


def test_overlay_draws_label_band_without_touching_the_frame():
    from _camera_fixtures import photo_frames

    image = photo_frames(["coffee"])[0]
    before = image.copy()
    result = ClassificationResult([Category(3, "cat", 0.8125)])
    annotated = draw_overlay(image, result, fps=24.3)
    assert overlay_text(result, 24.3) == "cat  81%  |  24.3 fps"
    assert annotated.shape == image.shape and np.array_equal(image, before)
    band = annotated[:12]
    assert (band == 0).mean() > 0.5 and (band == 255).any()  # black band with white text
    assert np.array_equal(annotated[60:], image[60:])
