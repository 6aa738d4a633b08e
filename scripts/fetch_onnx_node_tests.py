"""Fetch the ONNX project's backend node tests (model + input/output protobufs per operator case).

The data ships inside onnx wheels up to 1.18 (newer wheels leave it out). This script downloads ONE pinned
wheel with pip, checked against its sha256 (``--require-hashes``), and extracts only
``onnx/backend/test/data/node/`` (about 43 MB, 1450 cases) into the cache folder, once:

    python scripts/fetch_onnx_node_tests.py            # prints the folder; re-runs are free
    SLIDELITE_ONNX_NODE_TESTS=/some/dir python ...      # choose the cache folder

``scripts/test.sh`` runs it before pytest; ``tests/test_numpy_onnx_node_tests.py`` calls :func:`node_tests`
itself when the folder is missing. The wheel is platform-specific, but only its data files are used, so the
pinned manylinux x86_64 wheel serves every machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.18.0"
WHEEL = f"onnx-{VERSION}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SHA256 = "6acafb3823238bbe8f4340c7ac32fb218689442e074d797bee1c5c9a02fdae75"
PREFIX = "onnx/backend/test/data/node/"
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / f"onnx-node-tests-{VERSION}"


def cache_folder() -> Path:
    """Where the node tests live (``$SLIDELITE_ONNX_NODE_TESTS`` or ``.cache/`` in the repository)."""
    return Path(os.environ.get("SLIDELITE_ONNX_NODE_TESTS", DEFAULT_CACHE))


def node_tests() -> Path:
    """The folder holding one sub-folder per node test case, downloaded and extracted on first use."""
    folder = cache_folder()
    done = folder / ".complete"
    if done.exists():
        return folder / "node"
    with tempfile.TemporaryDirectory() as work:
        requirement = Path(work) / "requirements.txt"
        requirement.write_text(f"onnx=={VERSION} --hash=sha256:{SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                        "--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
                        "--implementation", "cp", "-d", work, "-r", str(requirement)], check=True)
        with zipfile.ZipFile(Path(work) / WHEEL) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(PREFIX) and not m.endswith("/")]
            for member in members:
                target = folder / "node" / member[len(PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(wheel.read(member))
    done.write_text(f"{WHEEL} sha256={SHA256}\n")
    return folder / "node"


if __name__ == "__main__":
    print(node_tests())
