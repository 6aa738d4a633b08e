"""Which inference engine installs where: ask PyPI, per platform and Python version, for a binary wheel.

    .venv/bin/python tests/arm/wheel_matrix.py [--jobs 4] > matrix.md

For every (platform, Python) pair it runs ``pip install --dry-run --only-binary=:all: --no-deps
--platform ... --python-version ...`` for onnxruntime, ai-edge-litert, tflite-runtime, numpy and pillow
(nothing is installed; pip resolves against PyPI's file lists) and prints a Markdown table of the newest
version that has a wheel, or "-" when none does. docs/install.md records its output.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

PACKAGES = ("onnxruntime", "ai-edge-litert", "tflite-runtime", "numpy", "pillow")
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
_GLIBC = [f"manylinux_2_{minor}" for minor in range(17, 37)] + ["manylinux2014"]  # up to glibc 2.36 (bookworm)
#: platform label -> pip ``--platform`` tags a machine of that kind accepts
PLATFORMS: Dict[str, List[str]] = {
    "Linux x86_64 (glibc 2.36)": [f"{tag}_x86_64" for tag in _GLIBC],
    "Linux aarch64 / Pi OS 64-bit (glibc 2.36)": [f"{tag}_aarch64" for tag in _GLIBC],
    "Linux armv7l / Pi OS 32-bit (glibc 2.36)": [f"{tag}_armv7l" for tag in _GLIBC],
    "macOS arm64 (14)": [f"macosx_{major}_0_arm64" for major in range(11, 15)],
    "Windows x86_64": ["win_amd64"],
}


def resolve(package: str, platform: List[str], python: str) -> Optional[str]:
    """The version pip would install from a wheel for this platform and Python, or None."""
    with tempfile.TemporaryDirectory() as target:
        report = Path(target) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "-q",
                   "--only-binary=:all:", "--target", str(Path(target) / "t"), "--python-version", python,
                   "--implementation", "cp", "--report", str(report), package]
        for tag in platform:
            command += ["--platform", tag]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not report.exists():
            return None
        install = json.loads(report.read_text())["install"]
        return install[0]["metadata"]["version"] if install else None


def main(argv: "list[str] | None" = None) -> int:
    """Print the matrix as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args(argv)
    cells: List[Tuple[str, str, str]] = [(p, py, pkg) for p in PLATFORMS for py in PYTHONS for pkg in PACKAGES]
    with ThreadPoolExecutor(args.jobs) as pool:
        found = dict(zip(cells, pool.map(lambda c: resolve(c[2], PLATFORMS[c[0]], c[1]), cells)))
    print("| platform | Python | " + " | ".join(PACKAGES) + " |")
    print("|---|---|" + "---|" * len(PACKAGES))
    for platform in PLATFORMS:
        for python in PYTHONS:
            row = [found[(platform, python, pkg)] or "-" for pkg in PACKAGES]
            print(f"| {platform} | {python} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
