"""``--backend auto`` on a machine without engines, and which backends can run a file as it is.

The engines are made unimportable in a real ``python -m slidelite`` process by a meta-path finder that the
launcher below installs before the CLI starts: ``missing`` makes them look uninstalled (as on 32-bit
Raspberry Pi OS, where no onnxruntime or LiteRT wheel exists), ``broken`` makes them installed but failing
to import (a wheel whose native library does not load).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from slidelite.backends import BACKENDS, INSTALL_DOC_HINT, create_backend
from slidelite.backends.capability import choose
from slidelite.backends.numpy_backend import NumpyBackend
from slidelite.errors import ModelError
from slidelite.model_file import open_model_file
from tests._cli_fixtures import ROOT, CliRun, run_cli
from tests._runtime_fixtures import make_fixture_onnx

ENGINES = "onnxruntime,ai_edge_litert,tflite_runtime"
LAUNCHER = r'''
import importlib.abc, importlib.machinery, runpy, sys

mode, names = sys.argv[1], tuple(sys.argv[2].split(","))


class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in names and fullname.split(".")[0] not in names:
            return None
        if mode == "missing":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError(f"lib{module.__name__}.so: cannot open shared object file: No such file or directory")


sys.meta_path.insert(0, Block())
sys.argv = ["slidelite", *sys.argv[3:]]
runpy.run_module("slidelite", run_name="__main__", alter_sys=True)
'''
FMNIST = ROOT / "slidelite" / "models" / "slide_swin_micro_fmnist.onnx"
BOOT = ROOT / "slidelite" / "samples" / "fashion_mnist_ankle_boot.png"


def run_without(mode: str, names: str, args: List[Any], tmp_path: Path) -> CliRun:
    """``python -m slidelite ARGS`` with the engines ``names`` made ``mode`` (missing / broken)."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    run = subprocess.run([sys.executable, str(launcher), mode, names, *map(str, args)], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    return CliRun(run.returncode, run.stdout, run.stderr)


def _top(run: CliRun) -> List[Dict[str, Any]]:
    assert run.exit_code == 0, run.stderr
    return json.loads(run.stdout)["categories"]


@pytest.mark.parametrize("mode, why", [
    ("missing", 'onnxruntime is not installed (pip install "slidelite[onnx]")'),
    ("broken", "onnxruntime is installed but fails to import (ImportError: libonnxruntime.so: cannot open"),
])
def test_auto_falls_back_to_numpy_without_an_engine(tmp_path: Path, mode: str, why: str) -> None:
    args = ["classify", "--json", "--top-k", "5", "--model", FMNIST, BOOT]
    reference = _top(run_cli([*args[:1], "--backend", "onnxruntime", *args[1:]]))
    got = _top(run_without(mode, ENGINES, args, tmp_path))
    assert [c["label"] for c in got] == [c["label"] for c in reference] and got[0]["label"] == "Ankle boot"
    assert max(abs(a["score"] - b["score"]) for a, b in zip(got, reference)) < 1e-4

    info = run_without(mode, ENGINES, ["info", "--json", FMNIST], tmp_path)
    assert info.exit_code == 0 and info.stderr == ""
    report = json.loads(info.stdout)
    assert report["backend"]["name"] == "numpy" and report["backends_installed"] == (
        ["numpy"] if mode == "missing" else ["onnxruntime", "numpy"])
    assert report["backend"]["why"].startswith(f"auto: the first usable of onnxruntime, numpy; {why}")
    verdicts = {v["backend"]: v for v in report["backends"]}
    assert verdicts["numpy"] == {"backend": "numpy", "can_run": True, "reason": "loads the file (numpy "
                                 f"{report['backend']['version']})"}
    assert not verdicts["onnxruntime"]["can_run"] and f"onnxruntime {verdicts['onnxruntime']['reason']}".startswith(why)


def test_tflite_without_an_engine(tmp_path: Path) -> None:
    """A .tflite file with no TFLite engine: the numpy backend runs it once it reads .tflite, else one line."""
    tflite = FMNIST.with_suffix(".tflite")
    run = run_without("missing", ENGINES, ["classify", "--json", "--top-k", "5", "--model", tflite, BOOT], tmp_path)
    if "tflite" in BACKENDS["numpy"].formats:
        assert _top(run)[0]["label"] == "Ankle boot"
    else:
        assert run.exit_code == 1 and run.stdout == ""
        assert run.stderr.strip() == (f'error: no backend for {tflite}: pip install "slidelite[litert]" '
                                      f"({INSTALL_DOC_HINT})")


def test_no_usable_engine_names_the_broken_one(tmp_path: Path) -> None:
    names = ENGINES + ",slidelite.backends.numpy_backend"
    run = run_without("broken", names, ["classify", "--model", FMNIST, BOOT], tmp_path)
    assert run.exit_code == 1 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"error: no backend for {FMNIST}: onnxruntime is installed but fails to import "
                           "(ImportError: libonnxruntime.so: cannot open shared object file")


# ---- which backends can run a file as it is ----------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_ml_model(tmp_path_factory) -> Path:
    """The fixture classifier with an ``ai.onnx.ml`` Normalizer after its logits: onnxruntime runs it, the
    numpy backend (ai.onnx ops only) refuses it at load."""
    import onnx
    from onnx import helper

    folder = tmp_path_factory.mktemp("ml")
    model = onnx.load(str(make_fixture_onnx(folder / "plain.onnx")))
    graph = model.graph
    logits = graph.output[0]
    graph.node.append(helper.make_node("Normalizer", [logits.name], ["normed"], domain="ai.onnx.ml", norm="MAX"))
    graph.output.remove(logits)
    graph.output.append(helper.make_tensor_value_info("normed", onnx.TensorProto.FLOAT, ["batch", 10]))
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    path = folder / "normalized.onnx"
    onnx.save(model, str(path))
    return path


def test_verdicts_come_from_each_backend_own_load(onnx_ml_model: Path) -> None:
    model_file = open_model_file(onnx_ml_model)
    with pytest.raises(ModelError) as refusal:
        NumpyBackend(model_file, 1)
    choice = choose(model_file)
    verdicts = {v.backend: v for v in choice.verdicts}
    assert list(verdicts) == ["onnxruntime", "litert", "tflite", "numpy"]
    assert verdicts["onnxruntime"].can_run and verdicts["onnxruntime"].reason.startswith("loads the file (onnxruntime ")
    assert not verdicts["numpy"].can_run
    assert str(refusal.value).startswith(str(model_file.path)) and str(refusal.value).endswith(verdicts["numpy"].reason)
    assert "ai.onnx.ml.Normalizer" in verdicts["numpy"].reason
    assert verdicts["litert"] == ("litert", False, "runs tflite files only")
    assert choice.chosen == "onnxruntime" and choice.backend is not None and choice.backend.name == "onnxruntime"
    choice.backend.close()


def test_info_table_and_a_backend_that_refuses(onnx_ml_model: Path) -> None:
    run = run_cli(["info", "--backend", "numpy", onnx_ml_model])
    assert run.exit_code == 0
    (warning,) = run.error_lines
    assert warning.startswith(f"warning: {onnx_ml_model}: numpy cannot run this file: node '' uses ONNX op "
                              "'ai.onnx.ml.Normalizer'")
    assert warning.endswith("; it runs with --backend onnxruntime")
    table = run.stdout.split("can each backend run this file as it is? (checked by loading it)\n", 1)[1]
    rows = [line.split(None, 2) for line in table.splitlines()]
    assert rows[0] == ["backend", "can", "run  reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("onnxruntime", "yes"), ("litert", "no"), ("tflite", "no"),
                                                ("numpy", "no")]
    assert "backend:     none (see the warning below" in run.stdout

    auto = json.loads(run_cli(["info", "--json", onnx_ml_model]).stdout)
    assert auto["backend"]["name"] == "onnxruntime" and auto["problems"] == []
    assert auto["backend"]["why"] == "auto: the first usable of onnxruntime, numpy"
    assert json.loads(run_cli(["info", "--json", "--backend", "numpy", FMNIST]).stdout)["backend"]["why"] == \
        "asked for with --backend numpy"


def test_create_backend_still_raises_the_refusal(onnx_ml_model: Path) -> None:
    """auto picks the first usable engine and does not hide its refusal behind another backend."""
    with pytest.raises(ModelError, match="ai.onnx.ml.Normalizer"):
        create_backend(open_model_file(onnx_ml_model), "numpy")
    with create_backend(open_model_file(onnx_ml_model)) as backend:
        assert backend.name == "onnxruntime"
