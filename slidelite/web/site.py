"""Write the static site: page, model, metadata as JSON, browser runtime files and the offline service worker.

Layout of the output folder::

    index.html app.js preprocess.js engines.js bench.js style.css manifest.webmanifest
    sw.js            service worker; caches every file below (named after the site's content hash)
    config.json      model file, format, size, sha256, the slidelite metadata (JSON), runtime, top-k
    model/<file>     the model file, unchanged
    runtime/...      onnxruntime-web (.onnx) or MediaPipe Tasks Vision (.tflite) files, from npm
    runtime/NOTICE.txt   package names, versions, licenses and integrity
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import __version__
from ..errors import UsageError
from ..model_file import ModelFile, open_model_file, read_metadata
from ..models import resolve_model
from .compat import check_browser_runnable
from .npm import MEDIAPIPE_TASKS_VISION, ONNXRUNTIME_WEB, NpmPackage, copy_package_files, package_source

PAGE_FILES = ("index.html", "app.js", "preprocess.js", "engines.js", "bench.js", "style.css", "manifest.webmanifest")
CONFIG_FILE = "config.json"
GENERATOR = "slidelite web"
_BACKEND_FOR_FORMAT = {"onnx": "onnxruntime", "tflite": "litert"}


@dataclass(frozen=True)
class Runtime:
    """The npm files a site needs for one model format.

    Attributes:
        package: the pinned npm package.
        files: ``{path in the package: path under the site's runtime/ folder}``.
        module: the ES module the page imports (under runtime/).
    """

    package: NpmPackage
    files: Dict[str, str]
    module: str


def runtime_for(model_format: str, webgpu: bool = False) -> Runtime:
    """The runtime files for ``model_format``; ``webgpu`` picks onnxruntime-web's WebGPU build (larger)."""
    if model_format == "tflite":
        files = {name: Path(name).name for name in ("vision_bundle.mjs", "wasm/vision_wasm_internal.js",
                                                     "wasm/vision_wasm_internal.wasm")}
        return Runtime(MEDIAPIPE_TASKS_VISION, files, "vision_bundle.mjs")
    bundle, wasm = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify") if webgpu else (
        "ort.wasm.min.mjs", "ort-wasm-simd-threaded")
    files = {f"dist/{name}": name for name in (bundle, f"{wasm}.mjs", f"{wasm}.wasm")}
    return Runtime(ONNXRUNTIME_WEB, files, bundle)


@dataclass(frozen=True)
class SiteBuild:
    """What :func:`build_site` wrote.

    Attributes:
        out: the site folder.
        model: the model file the site runs (copied into ``out/model/``).
        runtime: the browser runtime copied into ``out/runtime/``.
        files: every file of the site, relative to ``out``.
        size_bytes: their total size.
    """

    out: Path
    model: ModelFile
    runtime: Runtime
    files: Tuple[str, ...]
    size_bytes: int


def build_site(model: Optional[str], out: str, model_format: str = "onnx", webgpu: bool = False, top_k: int = 5,
               runtime_dir: Optional[str] = None, cache: Optional[str] = None) -> SiteBuild:
    """Write the static site for ``model`` into ``out``.

    Args:
        model: a model file, a shipped model name, or None for the default model.
        out: the output folder: new, empty, or an earlier ``slidelite web`` site (its files are replaced).
        model_format: the format picked for a shipped name (``onnx`` or ``tflite``); a file keeps its own.
        webgpu: ship onnxruntime-web's WebGPU build (used where the browser has WebGPU, else WebAssembly).
        top_k: how many classes the page shows.
        runtime_dir: an installed ``node_modules`` to copy the runtime from instead of the npm registry.
        cache: the tarball cache folder (default :func:`slidelite.web.npm.cache_dir`).

    Raises:
        ModelError: the model is missing, has no metadata, or the browser runtimes cannot run it.
        UsageError: ``out`` is a file or a non-empty folder that is not a slidelite site.
        RuntimeDownloadError: the runtime package cannot be fetched.
    """
    model_file = open_model_file(resolve_model(model, _BACKEND_FOR_FORMAT[model_format]))
    metadata = read_metadata(model_file)
    check_browser_runnable(model_file, metadata)
    runtime = runtime_for(model_file.format, webgpu and model_file.format == "onnx")
    _check_output(Path(out))
    source = package_source(runtime.package, runtime_dir, cache)  # before writing anything
    folder = _prepare_output(Path(out))
    copy_package_files(runtime.package, source, {k: f"runtime/{v}" for k, v in runtime.files.items()}, folder)
    _write_notice(folder, runtime.package)
    model_rel = f"model/{model_file.path.name}"
    (folder / "model").mkdir(exist_ok=True)
    shutil.copyfile(model_file.path, folder / model_rel)
    for name in PAGE_FILES:
        (folder / name).write_bytes(resources.files(__package__).joinpath("assets", name).read_bytes())
    config = {
        "generator": f"{GENERATOR} {__version__}",
        "slidelite_version": __version__,
        "top_k": top_k,
        "model": {"file": model_rel, "name": metadata.name, "format": model_file.format,
                  "size_bytes": model_file.size, "sha256": model_file.sha256},
        "runtime": {"kind": "onnxruntime-web" if model_file.format == "onnx" else "mediapipe",
                    "package": runtime.package.name, "version": runtime.package.version,
                    "module": f"runtime/{runtime.module}", "webgpu": runtime.module.startswith("ort.webgpu")},
        "metadata": metadata.to_dict(),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
    files = [CONFIG_FILE, *PAGE_FILES, model_rel, "runtime/NOTICE.txt", *(f"runtime/{v}" for v in runtime.files.values())]
    _write_service_worker(folder, files)
    size = sum((folder / name).stat().st_size for name in files)
    return SiteBuild(folder, model_file, runtime, tuple(["sw.js", *files]), size)


def _check_output(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file; pass a folder for the site (-o site/)")
    if folder.is_dir() and any(folder.iterdir()) and not _is_site(folder):
        raise UsageError(f"{folder}: folder is not empty and not a slidelite web site; pass a new or empty folder")


def _prepare_output(folder: Path) -> Path:
    """Create ``folder`` (checked by :func:`_check_output`) and remove an earlier site's model and runtime."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("model", "runtime"):
        shutil.rmtree(folder / stale, ignore_errors=True)
    return folder


def _is_site(folder: Path) -> bool:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and str(config.get("generator", "")).startswith(GENERATOR)


def _write_notice(folder: Path, package: NpmPackage) -> None:
    (folder / "runtime" / "NOTICE.txt").write_text(
        f"Files in this folder are copied unchanged from the npm package {package.name} {package.version}\n"
        f"(tarball integrity {package.integrity}); see https://www.npmjs.com/package/{package.name}\n"
        "for its license (onnxruntime-web: MIT; @mediapipe/tasks-vision: Apache-2.0).\n", encoding="utf-8")


def _write_service_worker(folder: Path, files: List[str]) -> None:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256((folder / name).read_bytes()).digest())
    header = f"const CACHE = \"slidelite-{digest.hexdigest()[:16]}\";\nconst FILES = {json.dumps(['./', *files])};\n"
    body = resources.files(__package__).joinpath("assets", "sw.js").read_text(encoding="utf-8")
    (folder / "sw.js").write_text(header + body, encoding="utf-8")
