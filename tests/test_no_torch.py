"""The runtime never imports torch, the zoo, the converter or onnx: proved in subprocesses.

1. With an import blocker installed (a meta-path finder that records and refuses torch, slidelite.zoo,
   slidelite.convert and onnx), ``python -m slidelite classify`` classifies a real photo with the fixture
   model, and nothing ever *tried* to import a blocked module (so even a guarded ``try: import torch``
   is caught).
2. Without the blocker (torch is installed here), importing every module under ``slidelite/`` and running
   the commands in-process leaves no blocked module in ``sys.modules``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._runtime_fixtures import make_fixture_onnx

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "slidelite" / "samples" / "chelsea.jpg"
BLOCKED = ("torch", "slidelite.zoo", "slidelite.convert", "onnx", "onnxscript", "torchvision", "timm")

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, json, runpy, sys
    BLOCKED = {BLOCKED!r}
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                attempts.append(name)
                raise ImportError(f"{{name}} is blocked by test_no_torch")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.argv = ["slidelite", *sys.argv[1:]]
    try:
        runpy.run_module("slidelite", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    sys.stdout.flush()
    print(json.dumps({{"attempts": attempts}}), file=sys.stderr)
    sys.exit(code)
""")


def _run_blocked(*args: str) -> "tuple[subprocess.CompletedProcess, list]":
    run = subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, cwd=ROOT)
    *messages, report = run.stderr.strip().splitlines()
    run.stderr = "\n".join(messages)
    return run, json.loads(report)["attempts"]


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory) -> Path:
    """A real small ONNX classifier with slidelite metadata."""
    return make_fixture_onnx(tmp_path_factory.mktemp("no_torch") / "fixture.onnx")


def test_classify_runs_with_torch_unimportable(fixture_model: Path) -> None:
    run, attempts = _run_blocked("classify", "--model", str(fixture_model), "--json", str(SAMPLE))
    assert run.returncode == 0, run.stderr
    assert attempts == []
    (line,) = run.stdout.splitlines()
    assert json.loads(line)["path"] == str(SAMPLE)


@pytest.mark.parametrize("args", [("models", "--json"), ("info", "{model}"), ("--help",), ("classify", "--help")])
def test_other_commands_never_touch_torch(fixture_model: Path, args: tuple) -> None:
    run, attempts = _run_blocked(*(a.format(model=fixture_model) for a in args))
    assert run.returncode == 0, run.stderr
    assert attempts == []


def test_importing_every_runtime_module_loads_no_torch(fixture_model: Path) -> None:
    """torch is installed here: importing all of slidelite/ and classifying must still not load it."""
    probe = textwrap.dedent(f"""
        import importlib, json, pkgutil, sys
        import slidelite
        from slidelite.cli import main
        names = [m.name for m in pkgutil.walk_packages(slidelite.__path__, "slidelite.")]
        for name in names:
            importlib.import_module(name)
        try:
            main(["classify", "--model", {str(fixture_model)!r}, {str(SAMPLE)!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        blocked = {BLOCKED!r}
        loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in blocked))
        print(json.dumps({{"modules": names, "loaded": loaded}}))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "slidelite.classifier" in report["modules"] and "slidelite.cli.classify" in report["modules"]
    assert report["loaded"] == []
