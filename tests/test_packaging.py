"""The wheel: pure Python, complete, small, three core dependencies; installs into a torch-free venv and classifies.

This is the issue's proof that ``pip install .`` in a fresh environment without torch gives a working
``slidelite classify``. The wheel is built from a copy of the working tree (the files git tracks or would
track), so the build never writes into the checkout.
"""
from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests._runtime_fixtures import make_fixture_onnx

ROOT = Path(__file__).resolve().parents[1]
MAX_WHEEL_BYTES = 15_000_000  # the "<= 15 MB", in decimal megabytes
# source folder -> its path inside the wheel (the package-dir mapping of pyproject.toml)
PACKAGE_FOLDERS = {"slidelite": "slidelite", "model_zoo": "slidelite/zoo", "convert": "slidelite/convert",
                   "apps": "slidelite/apps"}

pytestmark = pytest.mark.slow


BUILD_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")


def _project_files() -> list:
    """The files of the package folders and the build files that git tracks or would track."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                              *PACKAGE_FOLDERS, *BUILD_FILES], cwd=ROOT, check=True, capture_output=True).stdout.decode()
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the project tree and return its path."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    for name in _project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(work / "dist")], check=True, capture_output=True)
    (built,) = (work / "dist").glob("slidelite-*.whl")
    return built


def test_wheel_is_pure_python_and_small(wheel: Path) -> None:
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert wheel.stat().st_size <= MAX_WHEEL_BYTES, f"wheel is {wheel.stat().st_size} bytes"
    with zipfile.ZipFile(wheel) as archive:
        tags = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Root-Is-Purelib: true" in tags
    assert "Tag: py3-none-any" in tags


def test_wheel_contains_every_module_and_data_file(wheel: Path) -> None:
    expected = set()
    for name in _project_files():
        folder, _, rest = name.partition("/")
        if folder in PACKAGE_FOLDERS and name.endswith(".py"):
            expected.add(f"{PACKAGE_FOLDERS[folder]}/{rest}")
    expected |= {f"slidelite/zoo/{n.partition('/')[2]}" for n in _project_files() if n.startswith("model_zoo/labels/")}
    expected |= {"slidelite/models/manifest.json", "slidelite/samples/chelsea.jpg",
                 "slidelite/samples/fashion_mnist_ankle_boot.png", "slidelite/cli/classify.py",
                 "slidelite/zoo/slide_swin.py", "slidelite/convert/__init__.py", "slidelite/apps/__init__.py"}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_wheel_core_dependencies_are_numpy_pillow_click(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    metadata = email.parser.Parser().parsestr(text)
    requires = metadata.get_all("Requires-Dist") or []
    core = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert core == {"numpy", "pillow", "click"}, requires
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"onnx", "litert", "tflite", "convert", "camera", "dev"} <= extras
    torch_lines = [r for r in requires if _requirement_name(r) == "torch"]
    assert torch_lines and all('extra == "convert"' in r for r in torch_lines), torch_lines


def _requirement_name(requirement: str) -> str:
    name = requirement.split(";")[0].strip()
    for stop in "<>=!~[ (":
        name = name.split(stop)[0]
    return name.lower()


def test_wheel_installs_without_torch_and_classifies(wheel: Path, tmp_path: Path) -> None:
    """pip install "slidelite[onnx]" into a fresh venv: torch is not pulled in, `slidelite classify` works."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # this pip installs into it (--python): no ensurepip
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SLIDELITE_MODELS_DIR")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", f"{wheel}[onnx]"],
                   check=True, capture_output=True, env=clean_env)
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=clean_env)
    assert probe.returncode != 0, "torch must not be installed by slidelite[onnx]"

    model = make_fixture_onnx(tmp_path / "fixture.onnx")
    installed = subprocess.run(
        [str(python), "-c", "import slidelite, pathlib; print(pathlib.Path(slidelite.__file__).parent)"],
        check=True, capture_output=True, text=True, env=clean_env, cwd=tmp_path).stdout.strip()
    sample = Path(installed) / "samples" / "chelsea.jpg"
    assert str(env_dir) in installed and sample.is_file(), installed
    run = subprocess.run([str(env_dir / "bin" / "slidelite"), "classify", "--model", str(model), "--json", str(sample)],
                         capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    (line,) = run.stdout.splitlines()
    document = json.loads(line)
    scores = [c["score"] for c in document["categories"]]
    assert document["path"] == str(sample) and scores and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    listing = subprocess.run([str(env_dir / "bin" / "slidelite"), "models", "--json"], capture_output=True,
                             text=True, env=clean_env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr


def test_tflite_metadata_writer_is_found_beside_a_regular_install(wheel: Path, tmp_path: Path) -> None:
    """scripts/setup_tflite.sh makes .venv-tflite beside .venv: a non-editable install into .venv finds it with no
    environment variable, and says how to make it when it is missing."""
    repo_writer_venv = ROOT / ".venv-tflite"
    assert (repo_writer_venv / "bin" / "python").is_file(), "run scripts/setup_tflite.sh"
    project = tmp_path / "project"
    env_dir = project / ".venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SLIDELITE_TFLITE_SUPPORT_PYTHON")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, env=clean_env)
    # the converter's dependencies from this test's environment, as plain path entries (its .pth hooks, such as
    # an editable slidelite's finder, do not run): the slidelite imported is the wheel's
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=clean_env).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(purelib, "converter-deps.pth").write_text("\n".join(deps) + "\n")
    probe = ("import slidelite, sys\nfrom slidelite.convert.tflite_metadata import writer_python\n"
             "print(slidelite.__file__)\ntry:\n    print(writer_python())\n"
             "except Exception as exc:\n    print('error:', exc)\n")
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    installed, missing = run.stdout.splitlines()
    assert installed.startswith(str(env_dir)), installed
    assert missing.startswith("error: writing TFLite Metadata needs tflite-support"), missing
    assert f"python3 -m venv {project / '.venv-tflite'}" in missing
    (project / ".venv-tflite").symlink_to(repo_writer_venv.resolve(), target_is_directory=True)
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert run.stdout.splitlines()[1] == str(project / ".venv-tflite" / "bin" / "python"), run.stdout + run.stderr
