"""Frame sources of the camera app, each behind one small interface: :class:`Source` (open / read / close).

* ``picamera``   -> :class:`PicameraSource` (Raspberry Pi camera through picamera2; no OpenCV needed)
* ``0``, ``1``   -> :class:`CameraSource` (a USB camera through OpenCV ``VideoCapture``; also ``rtsp://`` URLs)
* ``clip.mp4``   -> :class:`VideoFileSource` (OpenCV)
* ``photos/``    -> :class:`FolderSource` (the folder's images in name order; Pillow only)
* ``auto``       -> picamera2 when importable, else camera 0

``read()`` returns the next frame as an RGB ``HxWx3 uint8`` numpy array, ``None`` when a file or folder
has reached its end (EOF, a normal stop), raises :class:`FrameError` for one unreadable frame (the stream
goes on) and :class:`SourceError` when the source stops delivering frames (the app closes it, then
reopens it with back-off). A file or folder resumes where it stopped when it is reopened.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from slidelite.errors import ImageError, SlideliteError
from slidelite.image import load_image, to_color_mode

CAMERA_EXTRA = 'pip install "slidelite[camera]"'
PICAMERA_SETUP = ("on Raspberry Pi OS run `sudo apt install python3-picamera2` and create the venv with "
                  "`python3 -m venv --system-site-packages` (see apps/README.md)")
DEFAULT_PICAMERA_SIZE = (640, 480)


class SourceError(SlideliteError):
    """A source cannot be opened, or stopped delivering frames."""


class FrameError(SlideliteError):
    """One frame could not be read (e.g. a corrupt image in a folder); the next one may be fine."""


class OpenCVMissingError(SlideliteError):
    """A feature needs OpenCV (video files, USB cameras, windows, recording), which is not installed."""


def require_cv2(feature: str) -> Any:
    """Import OpenCV for ``feature``, or raise :class:`OpenCVMissingError` with the install command."""
    # Our own one-line messages say what went wrong; keep OpenCV's and FFmpeg's log lines off stderr.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError:
        raise OpenCVMissingError(f"{feature} needs OpenCV, which is not installed: {CAMERA_EXTRA}") from None
    return cv2


class Source(ABC):
    """A stream of RGB frames.

    Attributes:
        name: how messages name this source.
        live: True for cameras (a failed read is a failure); False for files and folders (they end).
        fps: the native frame rate when known (video files, cameras), else None.
    """

    name: str = "source"
    live: bool = True
    fps: Optional[float] = None

    @abstractmethod
    def open(self) -> None:
        """Start delivering frames. Raises :class:`SourceError` when that is impossible."""

    @abstractmethod
    def read(self) -> Optional[np.ndarray]:
        """The next frame (RGB, HxWx3 uint8), or None at the end of a file or folder."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; calling it twice, or before :meth:`open`, is fine."""

    def rewind(self) -> None:
        """Start a file or folder over from its first frame (``--loop``)."""
        raise SourceError(f"{self.name}: a live source cannot be rewound")

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class FolderSource(Source):
    """The images of one folder (not recursive), in name order, decoded with Pillow."""

    live = False

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.name = folder
        self.position = 0
        self._names: List[str] = []

    def open(self) -> None:
        """List the folder's images (again, when reopened: the position is kept)."""
        suffixes = set(Image.registered_extensions())
        try:
            entries = sorted(os.listdir(self.folder))
        except OSError as exc:
            raise SourceError(f"{self.folder}: cannot list the image folder ({exc.strerror or exc})") from None
        self._names = [n for n in entries if os.path.splitext(n)[1].lower() in suffixes]
        if not self._names:
            raise SourceError(f"{self.folder}: the folder holds no image files")

    def read(self) -> Optional[np.ndarray]:
        """Decode the next image; a file that cannot be decoded raises :class:`FrameError`."""
        if self.position >= len(self._names):
            return None
        path = os.path.join(self.folder, self._names[self.position])
        try:
            image = to_color_mode(load_image(path), "RGB")
        except ImageError as exc:
            if not os.path.isdir(self.folder):  # the folder went away: a source failure, retry this image
                raise SourceError(f"{self.folder}: the image folder disappeared") from None
            self.position += 1
            raise FrameError(str(exc)) from None
        self.position += 1
        return np.asarray(image)

    def close(self) -> None:
        """Nothing to release (each image file is closed after decoding)."""

    def rewind(self) -> None:
        """Start over from the first image."""
        self.position = 0


class _OpenCVSource(Source):
    """Shared part of the sources read through OpenCV ``VideoCapture``."""

    def __init__(self, target: Union[int, str], name: str) -> None:
        self.target = target
        self.name = name
        self._cv2: Any = None
        self._capture: Any = None

    def _open_capture(self, feature: str, problem: str) -> Any:
        """Open ``VideoCapture(target)``; ``problem`` is the message when it does not open."""
        self._cv2 = require_cv2(feature)
        capture = self._cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.name}: {problem}")
        self._capture = capture
        self.fps = capture.get(self._cv2.CAP_PROP_FPS) or None
        return capture

    def _grab(self) -> Optional[np.ndarray]:
        """The next decoded frame as RGB, or None when OpenCV returned none.

        The frame is a channel-reversed view of OpenCV's BGR array, not a converted copy: frames the pipeline
        drops cost nothing more, and the classifier copies only the pixels under its crop.
        """
        ok, bgr = self._capture.read()
        return bgr[..., ::-1] if ok else None

    def close(self) -> None:
        """Release the capture."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoFileSource(_OpenCVSource):
    """A video file decoded by OpenCV (FFmpeg). A failed read before the last frame is a failure, after it EOF."""

    live = False

    def __init__(self, path: str) -> None:
        super().__init__(path, path)
        self.position = 0
        self._frame_count = 0

    def open(self) -> None:
        """Open the file and seek to where the previous open stopped."""
        if not os.path.isfile(self.target):
            raise SourceError(f"{self.name}: video file not found")
        capture = self._open_capture("reading a video file", "OpenCV cannot decode this file (not a video, or an "
                                                              "unsupported codec)")
        self._frame_count = int(capture.get(self._cv2.CAP_PROP_FRAME_COUNT))
        if self.position:
            capture.set(self._cv2.CAP_PROP_POS_FRAMES, self.position)

    def read(self) -> Optional[np.ndarray]:
        """The next frame; None at the end of the file."""
        frame = self._grab()
        if frame is not None:
            self.position += 1
            return frame
        if self._frame_count <= 0 or self.position >= self._frame_count:
            return None
        raise SourceError(f"{self.name}: stopped delivering frames at frame {self.position} of {self._frame_count}")

    def rewind(self) -> None:
        """Seek back to the first frame."""
        self.position = 0
        self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)


class CameraSource(_OpenCVSource):
    """A USB camera (V4L2 index) or a network stream URL, through OpenCV ``VideoCapture``."""

    def __init__(self, target: Union[int, str], size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(target, f"camera {target}")
        self.size = size

    def open(self) -> None:
        """Open the device and ask for ``size`` when given (the driver picks the closest mode)."""
        capture = self._open_capture("a USB camera", "cannot open the camera (not connected, used by another "
                                                    "program, or no permission on /dev/video*)")
        if self.size:
            capture.set(self._cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(self._cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])

    def read(self) -> Optional[np.ndarray]:
        """The next frame; a camera that returns none has failed."""
        frame = self._grab()
        if frame is None:
            raise SourceError(f"{self.name}: stopped delivering frames")
        return frame


class PicameraSource(Source):
    """The Raspberry Pi camera through picamera2 (libcamera)."""

    name = "picamera"

    def __init__(self, size: Optional[Tuple[int, int]] = None) -> None:
        self.size = size or DEFAULT_PICAMERA_SIZE
        self._camera: Any = None

    def open(self) -> None:
        """Configure a video stream of RGB frames and start it."""
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(f"picamera: picamera2 is not importable: {PICAMERA_SETUP}") from None
        try:
            camera = Picamera2()
            # picamera2 names formats by their little-endian word: "BGR888" is [R, G, B] bytes in memory.
            camera.configure(camera.create_video_configuration(main={"size": self.size, "format": "BGR888"}))
            camera.start()
        except Exception as exc:  # picamera2 raises RuntimeError/IndexError/... for a missing or busy camera
            raise SourceError(f"picamera: cannot start the camera ({exc})") from None
        self._camera = camera

    def read(self) -> Optional[np.ndarray]:
        """The next frame from the camera's main stream."""
        try:
            return self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"picamera: stopped delivering frames ({exc})") from None

    def close(self) -> None:
        """Stop and release the camera."""
        if self._camera is not None:
            self._camera.close()
            self._camera = None


def picamera_available() -> bool:
    """Whether picamera2 can be imported (Raspberry Pi OS with python3-picamera2)."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def make_source(spec: str, size: Optional[Tuple[int, int]] = None) -> Source:
    """The source that ``--source SPEC`` names (not opened yet).

    Raises:
        SourceError: ``spec`` is no camera, file or folder.
    """
    if spec == "auto":
        spec = "picamera" if picamera_available() else "0"
    if spec == "picamera":
        return PicameraSource(size)
    if spec.isdigit():
        return CameraSource(int(spec), size)
    if "://" in spec:
        return CameraSource(spec, size)
    if os.path.isdir(spec):
        return FolderSource(spec)
    if os.path.isfile(spec):
        return VideoFileSource(spec)
    raise SourceError(f"--source {spec}: no such file or folder; use 'picamera', a camera index (0), "
                      "a video file or an image folder")
