"""``slidelite camera --source SRC``: classify a live camera, video file or image-folder stream.

The app itself lives in ``apps/`` (``slidelite.apps.camera``) and is imported only when this command
runs. Output: text or ``--json`` lines per classified frame on stdout, then a summary (stderr as text,
stdout as a ``{"summary": ...}`` JSON line). Exit codes: 0 the stream ended or was stopped, 1 frames
failed or the source gave up, 2 usage error.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import click

from ..errors import SlideliteError
from ._common import (EXIT_INPUT_FAILED, EXIT_OK, backend_option, echo_json, error_boundary, model_option,
                      print_error, threads_option)


def _resolution(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[Tuple[int, int]]:
    """Parse ``WxH`` (e.g. ``640x480``)."""
    if value is None:
        return None
    width, _, height = value.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 640x480")
    return int(width), int(height)


def _log_to_stderr() -> None:
    """Show the app's messages (preview URL, skipped frames, reopens) as ``camera: ...`` lines on stderr."""
    log = logging.getLogger("slidelite.camera")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("camera: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@click.command("camera")
@click.option("--source", "-s", default="auto", show_default=True, metavar="SRC",
              help="'picamera', a camera index (0), a stream URL, a video file or an image folder; "
                   "auto: picamera2 when installed, else camera 0.")
@model_option
@backend_option
@threads_option
@click.option("--top-k", "-k", type=click.IntRange(min=0), default=3, show_default=True,
              help="Categories per frame (0: all).")
@click.option("--headless", is_flag=True, help="No window (automatic when there is no display).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per classified frame, then a JSON summary.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after classifying N frames.")
@click.option("--loop", is_flag=True, help="Start a video file or folder over at its end.")
@click.option("--source-fps", type=click.FloatRange(min=0), default=None, metavar="F",
              help="Deliver file/folder frames at F per second, like a camera (default: a video's own rate, "
                   "folders unpaced; 0: as fast as they decode).")
@click.option("--resolution", callback=_resolution, metavar="WxH", help="Frame size asked of a camera.")
@click.option("--record", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              help="Write the annotated frames to FILE (.mp4 or .avi).")
@click.option("--record-fps", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Playback rate of the recording.")
@click.option("--preview-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve an MJPEG preview on http://127.0.0.1:PORT/ (0: any free port).")
@click.option("--backoff-initial", type=click.FloatRange(min=0.0, min_open=True), default=0.5, show_default=True,
              help="Seconds before the first attempt to reopen a source that stopped delivering frames.")
@click.option("--backoff-max", type=click.FloatRange(min=0.0, min_open=True), default=10.0, show_default=True,
              help="Longest wait between reopen attempts (the wait doubles up to this).")
@click.option("--reopen-attempts", type=click.IntRange(min=0), default=None, metavar="N",
              help="Give up after N failed reopen attempts in a row (default: never).")
@click.option("--prepare-ahead", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Preprocess the next frame before the model is ready for it: auto does so while preprocessing "
                   "takes more than half an inference (a busy CPU); never always takes the newest frame.")
@error_boundary
def command(source: str, model: Optional[str], backend: str, threads: Optional[int], top_k: int, headless: bool,
            as_json: bool, max_frames: Optional[int], loop: bool, source_fps: Optional[float],
            resolution: Optional[Tuple[int, int]], record: Optional[str], record_fps: float,
            preview_port: Optional[int], backoff_initial: float, backoff_max: float,
            reopen_attempts: Optional[int], prepare_ahead: str) -> int:
    """Classify a live stream: the newest frame is always the one classified; stale frames are dropped.

    \b
    Examples:
      slidelite camera --source picamera
      slidelite camera --source 0 --preview-port 8080
      slidelite camera --source clip.mp4 --headless --json --max-frames 100
      slidelite camera --source photos/ --loop --record out.mp4
    Stop with Ctrl-C, SIGTERM or q in the window.
    """
    from slidelite.apps.camera import CameraConfig, run  # lazy: `slidelite --help` must stay light

    _log_to_stderr()
    config = CameraConfig(source=source, model=model, backend=backend, threads=threads, top_k=top_k,
                          headless=headless, json=as_json, max_frames=max_frames, loop=loop, source_fps=source_fps,
                          resolution=resolution, record=record, record_fps=record_fps, preview_port=preview_port,
                          backoff_initial_s=backoff_initial, backoff_max_s=max(backoff_max, backoff_initial),
                          reopen_attempts=reopen_attempts, prepare_ahead=prepare_ahead)
    stats, failure = run(config)
    summary = stats.summary()
    if as_json:
        echo_json({"summary": summary})
    else:
        click.echo("summary: " + ", ".join(f"{key} {value}" for key, value in summary.items()), err=True)
    if failure is not None and not isinstance(failure, SlideliteError):
        raise failure  # a bug, not a bad input: keep its traceback
    if failure is not None:
        print_error(str(failure))
    return EXIT_INPUT_FAILED if failure is not None or stats.errors else EXIT_OK
