"""An MJPEG preview of the annotated frames over HTTP (standard library ``http.server`` + Pillow).

``http://127.0.0.1:PORT/`` shows a page with the live picture; ``/stream.mjpg`` is the
``multipart/x-mixed-replace`` stream (what browsers and VLC play); ``/frame.jpg`` is the newest frame.
The server listens on localhost only: reach it from another machine through an SSH tunnel
(``ssh -L 8080:localhost:8080 pi@raspberrypi``) rather than exposing it.
"""
from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from slidelite.errors import SlideliteError

BOUNDARY = "slidelite-frame"
PAGE = (b"<!doctype html><title>slidelite camera</title>"
        b"<body style='margin:0;background:#000'><img src='/stream.mjpg' style='width:100%'></body>")


class FrameStore:
    """The newest annotated frame, JPEG-encoded on first request, with a sequence number clients wait on."""

    def __init__(self, quality: int = 80) -> None:
        self.quality = quality
        self.closed = False
        self._changed = threading.Condition()
        self._image: Optional[np.ndarray] = None
        self._jpeg: Optional[bytes] = None
        self._sequence = 0

    def publish(self, image: np.ndarray) -> None:
        """Replace the frame (RGB HxWx3 uint8); waiting clients wake up."""
        with self._changed:
            self._image, self._jpeg = image, None
            self._sequence += 1
            self._changed.notify_all()

    def wait(self, after: int, timeout: float = 1.0) -> Tuple[int, Optional[bytes]]:
        """Wait for a frame newer than sequence ``after``; returns (sequence, JPEG or None on timeout/close)."""
        with self._changed:
            self._changed.wait_for(lambda: self._sequence > after or self.closed, timeout)
            if self._sequence <= after or self.closed:
                return after, None
            if self._jpeg is None:
                buffer = io.BytesIO()
                Image.fromarray(self._image).save(buffer, format="JPEG", quality=self.quality)
                self._jpeg = buffer.getvalue()
            return self._sequence, self._jpeg

    def close(self) -> None:
        """Wake every client so its handler ends."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/``, ``/stream.mjpg`` and ``/frame.jpg`` from ``self.server.frames``."""

    server: "MjpegServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """Route one request."""
        if self.path == "/":
            self._reply(200, "text/html", PAGE)
        elif self.path == "/frame.jpg":
            _, jpeg = self.server.frames.wait(after=0, timeout=5.0)
            if jpeg is None:
                self._reply(503, "text/plain", b"no frame yet\n")
            else:
                self._reply(200, "image/jpeg", jpeg)
        elif self.path == "/stream.mjpg":
            self._stream()
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sequence = 0
        try:
            while not self.server.frames.closed:
                sequence, jpeg = self.server.frames.wait(after=sequence)
                if jpeg is not None:
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return  # the viewer went away

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Silence the per-request access log."""


class MjpegServer(ThreadingHTTPServer):
    """The preview server, running in a daemon thread from :meth:`start` until :meth:`close`."""

    daemon_threads = True

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise SlideliteError(f"--preview-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                                 "pick another port, or 0 for any free one") from None
        self.frames = FrameStore()
        self._thread = threading.Thread(target=self.serve_forever, name="slidelite-mjpeg", daemon=True)

    @property
    def url(self) -> str:
        """Where the preview page is (the real port when 0 was asked for)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def publish(self, image: np.ndarray) -> None:
        """Show ``image`` (RGB) to the viewers."""
        self.frames.publish(image)

    def close(self) -> None:
        """Stop serving, end the streams and free the port."""
        self.frames.close()
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join()
        self.server_close()
