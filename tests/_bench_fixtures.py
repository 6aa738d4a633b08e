"""Test helpers for the benchmark tests: the real ``benchmark_model`` outputs and a fake ``adb``.

No Android device exists here, so ``adb`` is replaced by a small executable placed first on PATH. It
records every invocation (its argv, one JSON list per line) and answers like a device would: ``getprop``
values, ``push``, the ``test -x`` probe for the binary, and, for the ``benchmark_model`` command, the
text of a stored real ``benchmark_model`` output (``tests/fixtures/benchmark_model``).
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Dict, List

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmark_model"

#: What the fake device answers to the ``getprop`` line, in :data:`slidelite.bench_adb.DEVICE_PROPERTIES` order.
FAKE_PROPS = ["Pixel 7", "Google", "Tensor G2", "gs201", "arm64-v8a", "14", "34"]

_FAKE_ADB = r'''#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(["adb"] + argv) + "\n")
if argv[:1] == ["-s"]:
    argv = argv[2:]
verb, rest = argv[0], argv[1:]
if verb == "push":
    if not os.path.exists(rest[0]):
        print(f"adb: error: cannot stat '{{rest[0]}}': No such file or directory", file=sys.stderr)
        sys.exit(1)
    print(f"{{rest[0]}}: 1 file pushed, 0 skipped.")
    sys.exit(0)
if verb != "shell":
    sys.exit(0)
line = " ".join(rest)
if line.startswith("getprop"):
    print("\n".join({props!r}))
elif line.startswith("test -x") or line.startswith("command -v"):
    if rest[0].split()[2] not in os.environ.get("FAKE_ADB_BINARIES", "").split(","):
        sys.exit(1)
    print("found")
elif rest and rest[0] in ("chmod", "rm"):
    pass
else:
    with open(os.environ["FAKE_ADB_OUTPUT"], encoding="utf-8") as handle:
        sys.stdout.write(handle.read())
    sys.exit(int(os.environ.get("FAKE_ADB_RC", "0")))
'''


def fixture_text(name: str) -> str:
    """The text of one stored ``benchmark_model`` output."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def install_fake_adb(tmp_path: Path, monkeypatch, output_fixture: str, binaries: str = "/data/local/tmp/benchmark_model",
                     exit_code: int = 0) -> Path:
    """Put a fake ``adb`` first on PATH; return the log file its invocations are written to.

    Args:
        output_fixture: the stored output the fake ``benchmark_model`` prints.
        binaries: comma-separated device paths where ``benchmark_model`` "exists".
        exit_code: exit status of the fake ``benchmark_model`` run.
    """
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(_FAKE_ADB.format(python=sys.executable, props=FAKE_PROPS), encoding="utf-8")
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "adb_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(FIXTURES / output_fixture))
    monkeypatch.setenv("FAKE_ADB_BINARIES", binaries)
    monkeypatch.setenv("FAKE_ADB_RC", str(exit_code))
    return log


def adb_calls(log: Path) -> List[List[str]]:
    """The recorded argv of every fake ``adb`` invocation, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def device_prop_dict() -> Dict[str, str]:
    """The fake device's facts keyed like :func:`slidelite.bench_adb.device_facts`."""
    from slidelite.bench_adb import DEVICE_PROPERTIES

    return dict(zip(DEVICE_PROPERTIES, FAKE_PROPS))
