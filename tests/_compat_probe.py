"""Run model files on one backend the way a user does: ``slidelite info --json FILE`` and ``slidelite classify
--json --backend BACKEND --model FILE PHOTOS``, each through the CLI (click's runner, in the calling process).

Used by the compatibility matrix (``tests/_compat_matrix.py``) in the test environment, and as a script in
``.venv-tflite`` (numpy 1.26, tflite-runtime), where neither torch nor pytest is installed::

    python -m tests._compat_probe BACKEND PHOTO_FOLDER FILE...   # prints one JSON list
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Sequence


def _invoke(args: Sequence[str]) -> Dict[str, Any]:
    """Run ``slidelite ARGS``: exit code, stdout, stderr, and the exception that escaped the CLI (if any)."""
    from click.testing import CliRunner

    from slidelite.cli import main

    result = CliRunner().invoke(main, list(args))
    escaped = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        escaped = f"{type(result.exception).__name__}: {result.exception}"
    return {"exit": result.exit_code, "stdout": result.stdout, "stderr": result.stderr, "exception": escaped}


def probe_file(path: str, backend: str, photos: str) -> Dict[str, Any]:
    """What ``info`` says each backend can do with ``path``, and what ``classify`` does with it on ``backend``:
    ``{"file", "backend", "can_run": {name: bool}, "info": run, "classify": run, "top1": {photo: label}}``."""
    info = _invoke(["info", "--json", path])
    can_run: Dict[str, bool] = {}
    if info["exit"] == 0:
        can_run = {row["backend"]: bool(row["can_run"]) for row in json.loads(info["stdout"]).get("backends", [])}
    run = _invoke(["classify", "--json", "--top-k", "1", "--threads", "1", "--backend", backend, "--model", path,
                   photos])
    top1: Dict[str, str] = {}
    for line in run["stdout"].splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("categories"):
            top1[record["path"].rsplit("/", 1)[-1]] = record["categories"][0]["label"]
    return {"file": path, "backend": backend, "can_run": can_run, "info": info, "classify": run, "top1": top1}


def probe(files: Sequence[str], backend: str, photos: str) -> List[Dict[str, Any]]:
    """:func:`probe_file` for each of ``files``."""
    return [probe_file(path, backend, photos) for path in files]


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[3:], sys.argv[1], sys.argv[2])))
