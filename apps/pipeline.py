"""LIVE_STREAM pipeline: capture, prepare and inference threads joined by one-slot mailboxes.

The capture thread reads frames as fast as the source delivers them and puts each into the frame mailbox,
replacing a frame nobody has taken yet (that one is *dropped* and counted). The prepare thread takes the
newest frame as soon as the inference thread has taken the previous tensor, and preprocesses it
(:meth:`slidelite.Classifier.prepare`) while the model runs on the previous one; the inference thread runs
the model (:meth:`slidelite.Classifier.classify_prepared`) back to back, so the frame rate approaches
1 / inference time rather than 1 / (preprocessing + inference). When preparing a frame takes longer than
:data:`PREPARE_AHEAD_SHARE` of an inference (measured as the stream runs: on a machine whose cores the
model's threads and other jobs keep busy, the prepare thread waits for a core), the next frame is prepared
as soon as the previous one is handed over, so one prepared frame is always waiting and the model never
waits for one (:class:`OverlapPolicy`); a frame is then older by about one inference when it is classified.
A frame's latency is at most about two inference times. Every frame delivered is either classified, failed
or dropped::

    delivered == classified + errors_classify + dropped

A source that stops delivering frames is closed and reopened with exponential back-off; a file or
folder that reaches its end stops the stream (or starts over with ``loop``).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, Optional, Tuple, TypeVar

import numpy as np

from slidelite.results import ClassificationResult, PreparedImage

from .sources import FrameError, Source, SourceError

log = logging.getLogger("slidelite.camera")
Item = TypeVar("Item")


@dataclass(frozen=True)
class Frame:
    """One captured frame: its position in the stream, when it was captured, and its RGB pixels."""

    index: int
    timestamp: float  # time.time() at capture (for output)
    captured: float   # time.monotonic() at capture (for the frame's age)
    image: np.ndarray


@dataclass(frozen=True)
class FrameResult:
    """What the inference thread hands to the outputs for each classified frame."""

    frame: Frame
    result: ClassificationResult
    latency_ms: float  # preprocessing + inference + postprocessing of this frame
    age_ms: float      # from capture to result
    fps: float         # recent classification rate
    dropped: int       # frames dropped so far


class OneSlot(Generic[Item]):
    """A one-item slot shared by two threads: ``take`` waits for the item; ``close`` ends it. What is still
    waiting at ``close(discard=True)``, or offered after ``close``, is dropped and counted."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._item: Optional[Item] = None
        self._closed = False
        self.dropped = 0

    def take(self) -> Optional[Item]:
        """Wait for the item; None once the slot is closed and empty."""
        with self._changed:
            self._changed.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            self._changed.notify_all()
            return item

    def close(self, discard: bool = False) -> None:
        """No more items; ``discard`` drops the waiting item instead of letting it be taken."""
        with self._changed:
            self._closed = True
            if discard and self._item is not None:
                self._item = None
                self.dropped += 1
            self._changed.notify_all()


class LatestFrameMailbox(OneSlot[Frame]):
    """A one-slot mailbox: ``put`` replaces the frame waiting there (counted as dropped), ``take`` waits."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered = 0

    def put(self, frame: Frame) -> None:
        """Offer the newest frame; a frame still waiting, or any frame after :meth:`close`, is dropped."""
        with self._changed:
            self.delivered += 1
            if self._closed or self._item is not None:
                self.dropped += 1
            if not self._closed:
                self._item = frame
                self._changed.notify_all()


class HandoffSlot(OneSlot[Tuple[Frame, PreparedImage]]):
    """The hand-over from the prepare to the inference thread: the producer waits until the slot is free
    (:meth:`wait_empty`), then :meth:`put` fills it; nothing is ever replaced."""

    def wait_empty(self) -> bool:
        """Wait until the slot is free; False once it is closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._item is None or self._closed)
            return not self._closed

    def put(self, item: Tuple[Frame, PreparedImage]) -> None:
        """Fill the free slot (after :meth:`wait_empty`); an item offered after :meth:`close` is dropped."""
        with self._changed:
            if self._closed:
                self.dropped += 1
                return
            self._item = item
            self._changed.notify_all()


#: The prepare thread works one frame ahead while its recent preparations took more than this share of the
#: recent inferences (wall time, exponential moving averages); otherwise it prepares the newest frame just in
#: time. Measured by ``benchmarks/camera_overlap.py``.
PREPARE_AHEAD_SHARE = 0.5


#: ``prepare_ahead`` settings -> the share of :class:`OverlapPolicy` (None: never ahead)
PREPARE_AHEAD = {"auto": PREPARE_AHEAD_SHARE, "always": 0.0, "never": None}


class OverlapPolicy:
    """When to prepare ahead: the recent wall time of preparing a frame against that of running the model
    (exponential moving averages; updated from the prepare and the inference thread). ``share`` None: never;
    before the model has run once, ahead as soon as a frame has been prepared."""

    def __init__(self, share: Optional[float] = PREPARE_AHEAD_SHARE, smoothing: float = 0.9) -> None:
        self.share = share
        self.smoothing = smoothing
        self.prepare_s = 0.0
        self.inference_s = 0.0

    def _average(self, average: float, seconds: float) -> float:
        return seconds if average == 0.0 else self.smoothing * average + (1 - self.smoothing) * seconds

    def prepared(self, seconds: float) -> None:
        """Record how long preparing one frame took."""
        self.prepare_s = self._average(self.prepare_s, seconds)

    def inferred(self, seconds: float) -> None:
        """Record how long one model run took."""
        self.inference_s = self._average(self.inference_s, seconds)

    @property
    def ahead(self) -> bool:
        """True when the next frame should be prepared before the model is ready for it."""
        return self.share is not None and self.prepare_s > self.share * self.inference_s


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between reopen attempts: initial, initial*factor, ... capped at maximum."""

    initial_s: float = 0.5
    maximum_s: float = 10.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """The waits before attempt 1, 2, 3, ... (endless)."""
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum_s)


class FpsMeter:
    """Events per second, smoothed over the last few events (exponential moving average)."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.fps = 0.0
        self._last: Optional[float] = None

    def tick(self, now: float) -> float:
        """Record an event at ``now`` (monotonic seconds) and return the current rate."""
        if self._last is not None and now > self._last:
            rate = 1.0 / (now - self._last)
            self.fps = rate if self.fps == 0.0 else self.smoothing * self.fps + (1 - self.smoothing) * rate
        self._last = now
        return self.fps


@dataclass
class StreamStats:
    """Counters of one run (read them after :meth:`LiveStream.join`)."""

    delivered: int = 0
    classified: int = 0
    dropped: int = 0
    errors_read: int = 0       # frames the source could not read
    errors_classify: int = 0   # frames the classifier failed on
    reopens: int = 0           # successful reopens after a source failure
    reopen_failures: int = 0   # reopen attempts that failed
    elapsed_s: float = 0.0
    latency_ms_total: float = 0.0
    inference_ms_total: float = 0.0
    idle_s: float = 0.0        # time the inference thread waited for a prepared frame
    prepared_ahead: int = 0    # frames prepared before the model had taken the previous one (OverlapPolicy)

    @property
    def errors(self) -> int:
        """All per-frame errors."""
        return self.errors_read + self.errors_classify

    def summary(self) -> Dict[str, Any]:
        """The numbers printed at exit (JSON-ready)."""
        done = max(self.classified, 1)
        return {
            "delivered": self.delivered, "classified": self.classified, "dropped": self.dropped,
            "errors": self.errors, "reopens": self.reopens, "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.classified / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0,
            "mean_latency_ms": round(self.latency_ms_total / done, 2),
            "mean_inference_ms": round(self.inference_ms_total / done, 2),
            "idle_s": round(self.idle_s, 3), "prepared_ahead": self.prepared_ahead,
        }


@dataclass
class StreamSettings:
    """How a :class:`LiveStream` runs.

    Attributes:
        max_frames: stop after classifying this many frames (None: until the source ends or stop()).
        loop: start a file or folder over at its end instead of stopping.
        pace_fps: deliver file/folder frames at this rate, like a camera (None or 0: as fast as they decode).
        backoff: waits between reopen attempts.
        max_reopen_attempts: give up after this many failed attempts in a row (None: never).
        prepare_ahead: ``auto`` (prepare the next frame before the model is ready for it while preparing takes
            more than :data:`PREPARE_AHEAD_SHARE` of an inference), ``always`` or ``never`` (always the newest
            frame, just in time).
    """

    max_frames: Optional[int] = None
    loop: bool = False
    pace_fps: Optional[float] = None
    backoff: Backoff = field(default_factory=Backoff)
    max_reopen_attempts: Optional[int] = None
    prepare_ahead: str = "auto"


@contextlib.contextmanager
def prompt_thread_switching(interval_s: float = 0.001) -> Iterator[None]:
    """Let a thread waiting for the GIL get it within ``interval_s`` (Python's default: 5 ms) while the block runs.

    The inference thread gives up the GIL inside the model and wants it back as soon as the model returns;
    with a busy capture thread it would otherwise often wait a whole default interval per frame. Measured on
    a loaded 2-core machine (unpaced 640x480 video, a 6 ms model): the inference thread classified 80 % of
    the wall time with the 5 ms default and 93 % with 1 ms.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class LiveStream:
    """Classify the newest frame of ``source`` with ``classifier`` until the source ends or :meth:`stop`.

    ``classifier`` is a :class:`slidelite.Classifier` (``prepare`` and ``classify_prepared`` are used).
    ``on_result`` is called from the inference thread with a :class:`FrameResult` for each classified
    frame. The source must be open already (so a bad source fails before any thread starts); the
    stream closes it.
    """

    def __init__(self, source: Source, classifier: Any, on_result: Callable[[FrameResult], None],
                 settings: Optional[StreamSettings] = None) -> None:
        self.source = source
        self.classifier = classifier
        self.on_result = on_result
        self.settings = settings or StreamSettings()
        self.stats = StreamStats()
        self.failure: Optional[BaseException] = None  # why the stream stopped early, if it did
        self._mailbox = LatestFrameMailbox()
        self._prepared = HandoffSlot()
        self.overlap = OverlapPolicy(PREPARE_AHEAD[self.settings.prepare_ahead])
        self._error_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._capture_loop, name="slidelite-capture", daemon=True),
                         threading.Thread(target=self._prepare_loop, name="slidelite-prepare", daemon=True),
                         threading.Thread(target=self._inference_loop, name="slidelite-inference", daemon=True)]
        self._started = 0.0

    def start(self) -> None:
        """Start the capture and inference threads."""
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the threads to finish (safe from a signal handler); the waiting frames are dropped."""
        self._stop.set()
        self._mailbox.close(discard=True)
        self._prepared.close(discard=True)

    def running(self) -> bool:
        """Whether a thread is still working."""
        return any(thread.is_alive() for thread in self._threads)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the stream to finish; True once it has."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()

    def join(self) -> StreamStats:
        """Stop, wait for the threads, and return the final counters."""
        self.stop()
        for thread in self._threads:
            thread.join()
        self.stats.elapsed_s = time.monotonic() - self._started
        self.stats.delivered = self._mailbox.delivered
        self.stats.dropped = self._mailbox.dropped + self._prepared.dropped
        return self.stats

    # -- capture thread ---------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        try:
            self._capture_frames()
        except BaseException as exc:  # an unexpected bug: stop the stream and report it, do not hang
            self.failure = exc
            self._stop.set()
        finally:
            self.source.close()
            self._mailbox.close()  # after EOF the inference thread still classifies the last frame

    def _capture_frames(self) -> None:
        interval = 1.0 / self.settings.pace_fps if self.settings.pace_fps and not self.source.live else 0.0
        due = time.monotonic()
        delays: Optional[Iterator[float]] = None  # the back-off sequence of the current outage
        index = 0
        while not self._stop.is_set():
            try:
                image = self.source.read()
            except FrameError as exc:
                self.stats.errors_read += 1
                log.warning("frame %d skipped: %s", index, exc)
                continue
            except SourceError as exc:
                log.warning("%s; reopening", exc)
                delays = delays or self.settings.backoff.delays()
                if not self._reopen(delays):
                    return
                continue
            delays = None
            if image is None:  # end of a file or folder
                if not self.settings.loop:
                    return
                self.source.rewind()
                continue
            if interval:
                due = max(due + interval, time.monotonic())  # never bursts to catch up after a slow read
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
            self._mailbox.put(Frame(index, time.time(), time.monotonic(), image))
            index += 1

    def _reopen(self, delays: Iterator[float]) -> bool:
        """Close the source and reopen it, waiting longer after each failed attempt. False: gave up/stopped."""
        self.source.close()
        attempts = 0
        for delay in delays:
            limit = self.settings.max_reopen_attempts
            if limit is not None and attempts >= limit:
                self.failure = SourceError(f"{self.source.name}: gave up after {attempts} failed reopen attempts")
                return False
            if self._stop.wait(delay):
                return False
            attempts += 1
            try:
                self.source.open()
            except SourceError as exc:
                self.stats.reopen_failures += 1
                log.warning("reopen attempt %d failed: %s", attempts, exc)
                continue
            self.stats.reopens += 1
            log.info("%s reopened after %d attempt(s)", self.source.name, attempts)
            return True
        return False

    # -- prepare thread ---------------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        try:
            while True:
                ahead = self.overlap.ahead
                if not ahead and not self._prepared.wait_empty():  # just in time: once the model is ready for it
                    return
                frame = self._mailbox.take()  # the newest frame
                if frame is None:
                    return
                started = time.monotonic()
                try:
                    prepared = self.classifier.prepare(frame.image)
                except Exception as exc:  # one bad frame must not end a camera that runs for months
                    self._failed(frame, exc)
                    continue
                self.overlap.prepared(time.monotonic() - started)
                self.stats.prepared_ahead += ahead
                self._prepared.wait_empty()
                self._prepared.put((frame, prepared))  # counted as dropped once the stream is closed
        except BaseException as exc:  # an unexpected bug: stop the stream and report it, do not hang
            self.failure = exc
            self.stop()
        finally:
            self._prepared.close()  # after EOF the inference thread still classifies the last frame

    # -- inference thread -------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        meter = FpsMeter()
        try:
            while True:
                waiting_since = time.monotonic()
                item = self._prepared.take()
                self.stats.idle_s += time.monotonic() - waiting_since
                if item is None:
                    return
                self._classify(*item, meter)
                if self.settings.max_frames and self.stats.classified >= self.settings.max_frames:
                    self.stop()
                    return
        except BaseException as exc:  # an output failed (e.g. disk full while recording): stop cleanly
            self.failure = exc
            self.stop()

    def _classify(self, frame: Frame, prepared: PreparedImage, meter: FpsMeter) -> None:
        """Run the model on one prepared frame; a failure is counted and logged, never raised."""
        started = time.monotonic()
        try:
            result = self.classifier.classify_prepared(prepared)
        except Exception as exc:  # one bad frame must not end a camera that runs for months
            self._failed(frame, exc)
            return
        now = time.monotonic()
        self.overlap.inferred(now - started)
        latency_ms = result.timings.total_ms
        self.stats.classified += 1
        self.stats.latency_ms_total += latency_ms
        self.stats.inference_ms_total += result.timings.inference_ms
        self.on_result(FrameResult(frame, result, latency_ms, (now - frame.captured) * 1000.0, meter.tick(now),
                                   self._mailbox.dropped + self._prepared.dropped))

    def _failed(self, frame: Frame, exc: Exception) -> None:
        """Count and log a frame the classifier failed on (called from the prepare and the inference thread)."""
        with self._error_lock:
            self.stats.errors_classify += 1
        log.warning("frame %d not classified: %s", frame.index, exc)
