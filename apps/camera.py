"""The camera app: classify a live stream with the public :class:`slidelite.Classifier` API.

Run it as ``slidelite camera --source SRC`` (see ``apps/README.md``) or from Python::

    from slidelite.apps.camera import CameraConfig, run
    stats = run(CameraConfig(source="clip.mp4", headless=True, json=True, max_frames=100))

What happens (the pieces live in their own modules, each small enough to copy):

1. :mod:`.sources` opens the source: picamera2, a USB camera, a video file or an image folder.
2. :mod:`.pipeline` runs capture, preprocessing and inference in three threads joined by one-frame
   mailboxes, so the newest frame is always the one classified (LIVE_STREAM) and the next frame is
   preprocessed while the model runs; stale frames are dropped and counted.
3. Each result goes to the outputs: JSON or text lines (:mod:`.outputs`), an overlay (:mod:`.overlay`)
   shown in a window, written to a video file, or served as an MJPEG preview (:mod:`.mjpeg`).
4. Ctrl-C, SIGTERM (``systemctl stop``), q in the window, ``max_frames`` or the end of a file stop it;
   the threads are joined, the camera and files released, and the counters returned.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, TextIO, Tuple

import numpy as np

from slidelite import Classifier, ClassifierOptions

from .mjpeg import MjpegServer
from .outputs import JsonLines, TextLines, VideoRecorder, Window, display_available
from .overlay import draw_overlay
from .pipeline import Backoff, FrameResult, LiveStream, StreamSettings, StreamStats, prompt_thread_switching
from .sources import make_source

log = logging.getLogger("slidelite.camera")


@dataclass
class CameraConfig:
    """Everything ``slidelite camera`` can be told (the CLI options map 1:1 onto these fields).

    Attributes:
        source: ``picamera``, a camera index (``"0"``), a stream URL, a video file, an image folder, or
            ``auto`` (picamera2 when importable, else camera 0).
        model, backend, threads, top_k: the classifier (see :class:`slidelite.ClassifierOptions`).
        headless: never open a window (also automatic without a display).
        json: print one JSON line per classified frame and a JSON summary (text lines otherwise, headless).
        max_frames: stop after this many classified frames.
        loop: start a video file or folder over at its end.
        source_fps: deliver file/folder frames at this rate like a camera would (None: a video's own rate,
            folders unpaced; 0: as fast as they decode).
        resolution: (width, height) asked of a camera.
        record: write the annotated frames to this video file (``.mp4`` or ``.avi``), at ``record_fps``.
        preview_port: serve an MJPEG preview on ``http://127.0.0.1:PORT/`` (0: any free port).
        backoff_initial_s, backoff_max_s: first and longest wait between reopen attempts.
        reopen_attempts: give up after this many failed reopen attempts in a row (None: never).
        prepare_ahead: when the next frame is preprocessed before the model is ready for it: ``auto``,
            ``always`` or ``never`` (see :class:`.pipeline.StreamSettings`).
    """

    source: str = "auto"
    model: Optional[str] = None
    backend: str = "auto"
    threads: Optional[int] = None
    top_k: int = 3
    headless: bool = False
    json: bool = False
    max_frames: Optional[int] = None
    loop: bool = False
    source_fps: Optional[float] = None
    resolution: Optional[Tuple[int, int]] = None
    record: Optional[str] = None
    record_fps: float = 10.0
    preview_port: Optional[int] = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    reopen_attempts: Optional[int] = None
    prepare_ahead: str = "auto"


class Outputs:
    """The outputs of one run, fed from the inference thread by :meth:`write`."""

    def __init__(self, config: CameraConfig, stdout: TextIO) -> None:
        self.window = None if config.headless or not display_available() else _open_window()
        self.lines = JsonLines(stdout) if config.json else TextLines(stdout) if self.window is None else None
        self.recorder = VideoRecorder(config.record, config.record_fps) if config.record else None
        self.preview: Optional[MjpegServer] = None
        if config.preview_port is not None:
            self.preview = MjpegServer(config.preview_port)
            self.preview.start()
            log.info("preview on %s", self.preview.url)
        # Everything that wants the annotated picture (the overlay is drawn once per frame for all of them).
        self._pictures: List[Callable[[np.ndarray], None]] = []
        if self.window:
            self._pictures.append(self.window.publish)
        if self.recorder:
            self._pictures.append(self.recorder.write)
        if self.preview:
            self._pictures.append(self.preview.publish)

    def write(self, item: FrameResult) -> None:
        """Print the frame's line; draw the overlay once for the window, the recording and the preview."""
        if self.lines:
            self.lines.write(item)
        if self._pictures:
            annotated = draw_overlay(item.frame.image, item.result, item.fps)
            for show in self._pictures:
                show(annotated)

    def close(self) -> None:
        """Release the window, the video file and the preview port."""
        for output in (self.window, self.recorder, self.preview):
            if output is not None:
                output.close()


def _open_window() -> Optional[Window]:
    """A window, or None (with a warning) when this OpenCV cannot open one."""
    from slidelite.errors import SlideliteError

    try:
        return Window()
    except SlideliteError as exc:
        log.warning("no window: %s", exc)
        return None


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGINT (Ctrl-C) and SIGTERM while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda signum, frame: stop()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(config: CameraConfig, stdout: TextIO = sys.stdout,
        on_result: Optional[Callable[[FrameResult], None]] = None) -> Tuple[StreamStats, Optional[BaseException]]:
    """Run the app until the source ends, ``max_frames``, q, Ctrl-C or SIGTERM.

    Args:
        config: what to run.
        stdout: where the per-frame lines go.
        on_result: also called with each :class:`FrameResult`, after the outputs (your own logic goes here).

    Returns:
        The counters, and the error that ended the stream early (the source gave up, an output
        failed), or None.

    Raises:
        SlideliteError: the model or the source cannot be opened (nothing was started).
    """
    source = make_source(config.source, config.resolution)
    options = ClassifierOptions(model=config.model, backend=config.backend, threads=config.threads,
                                max_results=config.top_k)
    with Classifier.create_from_options(options) as classifier:
        outputs = Outputs(config, stdout)
        try:
            source.open()
            pace = config.source_fps if config.source_fps is not None else source.fps
            settings = StreamSettings(max_frames=config.max_frames, loop=config.loop, pace_fps=pace,
                                      backoff=Backoff(config.backoff_initial_s, config.backoff_max_s),
                                      max_reopen_attempts=config.reopen_attempts, prepare_ahead=config.prepare_ahead)
            stream = LiveStream(source, classifier, _chain(outputs.write, on_result), settings)
            with stop_on_signals(stream.stop), prompt_thread_switching():
                stream.start()
                try:
                    _wait(stream, outputs.window)
                finally:
                    stats = stream.join()
        finally:
            outputs.close()
    return stats, stream.failure


def _chain(first: Callable[[FrameResult], None],
           then: Optional[Callable[[FrameResult], None]]) -> Callable[[FrameResult], None]:
    if then is None:
        return first

    def both(item: FrameResult) -> None:
        first(item)
        then(item)

    return both


def _wait(stream: LiveStream, window: Any) -> None:
    """Keep the main thread free for signals (and the window) until the stream ends."""
    while stream.running():
        if window is None:
            stream.wait(0.2)
            continue
        window.refresh()
        if window.quit_requested:
            stream.stop()
