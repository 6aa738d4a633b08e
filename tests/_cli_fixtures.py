"""Shared helpers of the CLI tests: real photos in many formats, bad inputs, and ways to run the CLI.

Photos come from scikit-image's bundled samples; bad inputs are written here (no hand-made blobs).
``run_cli`` runs in-process with click's CliRunner; ``run_subprocess`` runs ``python -m slidelite``.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from click.testing import CliRunner
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "slidelite" / "samples" / "chelsea.jpg"
# root keeps its uid but loses the capabilities that override file permissions
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@dataclass
class CliRun:
    """The outcome of one CLI invocation."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> List[str]:
        """The non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(args: Sequence[str], env: Optional[Dict[str, str]] = None) -> CliRun:
    """Run ``slidelite ARGS`` in-process with click's CliRunner (stdout and stderr kept apart)."""
    from slidelite.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return CliRun(result.exit_code, result.stdout, result.stderr)


def run_subprocess(args: Sequence[str], cwd: Optional[Path] = None, unprivileged: bool = False,
                   env: Optional[Dict[str, str]] = None) -> CliRun:
    """Run ``python -m slidelite ARGS`` in a real process.

    Args:
        unprivileged: when running as root, drop the capabilities that bypass file permissions
            (``setpriv``), so that a mode-000 file really cannot be read.
    """
    prefix = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else []
    run = subprocess.run([*prefix, sys.executable, "-m", "slidelite", *map(str, args)], capture_output=True,
                         text=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})})
    return CliRun(run.returncode, run.stdout, run.stderr)


def skimage_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as an RGB/L uint8 array (motorcycle: the left view)."""
    from skimage import data

    photo = getattr(data, name)()
    return photo[0] if isinstance(photo, tuple) else photo


# ---------------------------------------------------------------- good images in many formats and modes


def write_good_images(folder: Path) -> Dict[str, Path]:
    """Write valid images of every kind the runtime must accept; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    coffee, chelsea = skimage_photo("coffee"), skimage_photo("chelsea")
    writers: Dict[str, Callable[[Path], None]] = {
        "coffee.png": lambda p: Image.fromarray(coffee).save(p),
        "rocket.jpg": lambda p: Image.fromarray(skimage_photo("rocket")).save(p, quality=85),
        "camera_grey.png": lambda p: Image.fromarray(skimage_photo("camera")).save(p),
        "astronaut_rgba.png": lambda p: Image.fromarray(skimage_photo("astronaut")).convert("RGBA").save(p),
        "chelsea_cmyk.jpg": lambda p: Image.fromarray(chelsea).convert("CMYK").save(p, quality=85),
        "chelsea_16bit.png": lambda p: Image.fromarray(chelsea[..., 0].astype(np.uint16) * 257).save(p),
        "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p),
        "animated.gif": _write_animated_gif,
        "motorcycle.webp": lambda p: Image.fromarray(skimage_photo("stereo_motorcycle")).save(p, quality=80),
    }
    paths = {}
    for name, write in writers.items():
        write(folder / name)
        paths[name] = folder / name
    return paths


def _write_animated_gif(path: Path) -> None:
    frames = [Image.fromarray(skimage_photo("chelsea")).resize((90, 60)).convert("P"),
              Image.new("P", (90, 60), 3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


# ---------------------------------------------------------------- bad images


def write_bad_images(folder: Path) -> Dict[str, tuple]:
    """Write the bad image inputs of the runtime issue; returns name -> (path, expected message fragment)."""
    folder.mkdir(parents=True, exist_ok=True)
    chelsea = io.BytesIO()
    Image.fromarray(skimage_photo("chelsea")).save(chelsea, format="JPEG", quality=90)
    coffee = io.BytesIO()
    Image.fromarray(skimage_photo("coffee")).save(coffee, format="PNG")
    cases = {
        "zero_bytes.jpg": (b"", "zero-byte"),
        "text.jpg": (b"this is not a picture\n" * 20, "not an image file"),
        "truncated.jpg": (chelsea.getvalue()[: len(chelsea.getvalue()) // 2], "truncated"),
        "truncated.png": (coffee.getvalue()[: len(coffee.getvalue()) // 2], "truncated"),
        "bomb.png": (png_header_only(40_000, 40_000), "decompression bomb"),
    }
    out = {}
    for name, (payload, fragment) in cases.items():
        (folder / name).write_bytes(payload)
        out[name] = (folder / name, fragment)
    return out


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (8-bit RGB) and carries no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- a temporary shipped-model registry


def make_registry(folder: Path, entries: Sequence[Dict[str, object]]) -> Path:
    """Write ``manifest.json`` into ``folder`` for model files already there; sha256 and size are computed.

    Each entry needs at least ``name`` and ``file``; format comes from the suffix, the rest has defaults.
    """
    import hashlib
    import json

    models = []
    for entry in entries:
        data = (folder / str(entry["file"])).read_bytes()
        models.append({"format": Path(str(entry["file"])).suffix.lstrip("."), "precision": "fp32",
                       "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "default": False,
                       "architecture": "fixture_cnn", "description": "test fixture",
                       "accuracy": {"top1": 0.5, "dataset": "fixture"}, "license": "Apache-2.0", **entry})
    (folder / "manifest.json").write_text(json.dumps({"manifest_version": 1, "models": models}), encoding="utf-8")
    return folder
