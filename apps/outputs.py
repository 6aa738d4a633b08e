"""Where the camera app's results go: lines on stdout, an annotated video file, a window on screen.

The line writers run in the inference thread. The window runs in the main thread (GUI toolkits
want that), showing the newest annotated frame the inference thread left for it.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, TextIO

import numpy as np

from slidelite.errors import SlideliteError

from .pipeline import FrameResult
from .sources import require_cv2

WINDOW_TITLE = "slidelite camera (q: quit)"
QUIT_KEYS = (ord("q"), 27)  # q, Esc


def frame_record(item: FrameResult) -> Dict[str, Any]:
    """The JSON object of one classified frame."""
    return {
        "frame": item.frame.index,
        "timestamp": round(item.frame.timestamp, 3),
        "categories": [{"index": c.index, "label": c.label, "score": round(c.score, 6)}
                       for c in item.result.categories],
        "latency_ms": round(item.latency_ms, 2),
        "age_ms": round(item.age_ms, 2),
        "dropped": item.dropped,
    }


class JsonLines:
    """One JSON object per classified frame (see :func:`frame_record`), flushed at once."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream

    def write(self, item: FrameResult) -> None:
        """Print the line of one frame."""
        self.stream.write(json.dumps(frame_record(item), ensure_ascii=False, separators=(",", ":")) + "\n")
        self.stream.flush()


class TextLines:
    """``frame 12  tabby, tabby cat 0.812  9.1 ms  dropped 3`` per classified frame."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream

    def write(self, item: FrameResult) -> None:
        """Print the line of one frame."""
        top = item.result.top
        label = f"{top.label} {top.score:.3f}" if top else "(no category)"
        self.stream.write(f"frame {item.frame.index:<6d} {label}  {item.latency_ms:.1f} ms  "
                          f"dropped {item.dropped}\n")
        self.stream.flush()


class VideoRecorder:
    """Writes annotated frames to a video file (``.mp4``: MPEG-4 Part 2, ``.avi``: Motion JPEG) with OpenCV.

    The file holds the classified frames, played back at ``fps``; it is opened at the first frame
    (its size is the frame's).
    """

    def __init__(self, path: str, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._cv2 = require_cv2("--record")
        self._writer: Any = None

    def write(self, image: np.ndarray) -> None:
        """Append one RGB frame."""
        if self._writer is None:
            codec = "MJPG" if self.path.lower().endswith(".avi") else "mp4v"
            height, width = image.shape[:2]
            self._writer = self._cv2.VideoWriter(self.path, self._cv2.VideoWriter_fourcc(*codec), self.fps,
                                                 (width, height))
            if not self._writer.isOpened():
                raise SlideliteError(f"--record {self.path}: OpenCV cannot write this file (use .mp4 or .avi "
                                     "in a writable folder)")
        self._writer.write(self._cv2.cvtColor(image, self._cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def display_available() -> bool:
    """Whether a graphical session exists (X11 or Wayland); without one the app runs headless."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Window:
    """An OpenCV window showing the newest annotated frame; pressing q or Esc asks to quit."""

    def __init__(self) -> None:
        self._cv2 = require_cv2("the on-screen window")
        self._latest: Optional[np.ndarray] = None
        self.quit_requested = False
        try:
            self._cv2.namedWindow(WINDOW_TITLE, self._cv2.WINDOW_AUTOSIZE)
        except self._cv2.error:
            raise SlideliteError("this OpenCV build has no GUI (opencv-python-headless): install opencv-python "
                                 "for a window, or pass --headless") from None

    def publish(self, image: np.ndarray) -> None:
        """Called from the inference thread: the frame to show next."""
        self._latest = image

    def refresh(self, wait_ms: int = 30) -> None:
        """Called from the main thread: show the newest frame and poll the keyboard for ``wait_ms``."""
        image, self._latest = self._latest, None
        if image is not None:
            self._cv2.imshow(WINDOW_TITLE, self._cv2.cvtColor(image, self._cv2.COLOR_RGB2BGR))
        if self._cv2.waitKey(wait_ms) & 0xFF in QUIT_KEYS:
            self.quit_requested = True

    def close(self) -> None:
        """Close the window."""
        self._cv2.destroyAllWindows()
