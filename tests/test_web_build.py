"""``slidelite web`` without a browser: the site's files, the pinned npm runtimes (download, integrity, cache,
``--runtime-dir``), build-time refusals of models a browser cannot run, and ``--serve --https`` on 127.0.0.1.

The runtime packages are fetched from the npm registry by the same code users run, into the user cache
(``$SLIDELITE_WEB_CACHE`` or ``~/.cache/slidelite/web``); the failure tests point the registry at 127.0.0.1.
Slow: the first run downloads ~46 MB of npm tarballs.
"""
from __future__ import annotations

import hashlib
import json
import re
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from slidelite.errors import ModelError
from slidelite.model_file import open_model_file
from slidelite.web import build_site, compat
from slidelite.web.npm import ONNXRUNTIME_WEB, REGISTRY_ENV, cache_dir, fetch_tarball
from slidelite.web.serve import ensure_certificate, lan_address
from tests._cli_fixtures import ROOT, run_subprocess
from tests._runtime_fixtures import make_fixture_onnx

pytestmark = pytest.mark.slow

PAGE_ASSETS = ("index.html", "app.js", "preprocess.js", "engines.js", "bench.js", "style.css", "sw.js")


@pytest.fixture(scope="module")
def onnx_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's site, its runtime fetched through the user cache."""
    return build_site(None, str(tmp_path_factory.mktemp("site") / "site")).out


def unreachable_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the npm registry at a closed port on 127.0.0.1."""
    monkeypatch.setenv(REGISTRY_ENV, "http://127.0.0.1:9")


def test_site_is_self_contained(onnx_site: Path) -> None:
    config = json.loads((onnx_site / "config.json").read_text(encoding="utf-8"))
    model = onnx_site / config["model"]["file"]
    model_file = open_model_file(model)
    assert config["metadata"] == model_file.metadata.to_dict()
    assert config["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() == model_file.sha256
    assert config["runtime"] == {"kind": "onnxruntime-web", "package": "onnxruntime-web", "version": "1.31.1",
                                 "module": "runtime/ort.wasm.min.mjs", "webgpu": False}
    cached = {}
    with tarfile.open(cache_dir() / ONNXRUNTIME_WEB.tarball_name) as archive:
        for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
            cached[name] = archive.extractfile(f"package/dist/{name}").read()
    for name, data in cached.items():
        assert (onnx_site / "runtime" / name).read_bytes() == data
    for name in PAGE_ASSETS:  # nothing is fetched from elsewhere when the page runs
        assert not re.search(r"https?://[a-z0-9]", (onnx_site / name).read_text(encoding="utf-8")), name
    files = json.loads(re.search(r"const FILES = (\[.*\]);", (onnx_site / "sw.js").read_text()).group(1))
    on_disk = {str(p.relative_to(onnx_site)) for p in onnx_site.rglob("*") if p.is_file()} - {"sw.js"}
    assert set(files) - {"./"} == on_disk  # the service worker caches every file of the site


def test_cli_writes_tflite_site_and_rebuilds_in_place(tmp_path: Path) -> None:
    out = tmp_path / "site"
    for _ in range(2):  # an earlier slidelite web site is rebuilt in place
        run = run_subprocess(["web", "-o", str(out), "--format", "tflite", "--top-k", "3"])
        assert run.exit_code == 0, run.stderr
        assert "efficientnet_lite0.tflite on @mediapipe/tasks-vision 1.1.0" in run.stdout
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["top_k"] == 3 and config["runtime"]["kind"] == "mediapipe"
    assert sorted(p.name for p in (out / "runtime").iterdir()) == [
        "NOTICE.txt", "vision_bundle.mjs", "vision_wasm_internal.js", "vision_wasm_internal.wasm"]


def one_line_error(run: Any, code: int, *words: str) -> str:
    """Assert that ``run`` failed with exit ``code`` and one ``error:`` line holding ``words``."""
    assert run.exit_code == code, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_foreign_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    one_line_error(run_subprocess(["web", "-o", str(tmp_path)]), 2, "not empty")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def repack_tflite(source: Path, path: Path, custom_op: Optional[str] = None, **preprocess: Any) -> Path:
    """``source`` re-packed, its first operator optionally turned into the custom one ``custom_op`` (as Flex/TF
    select ops are), with its slidelite metadata appended again (``preprocess``/``dtype`` fields changed)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(source.read_bytes(), 0))
    if custom_op:
        code = model.operatorCodes[0]
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = custom_op
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    document = open_model_file(source).metadata.to_dict()
    if "dtype" in preprocess:
        document["input"].update(dtype=preprocess.pop("dtype"), quantization={"scale": 1.0, "zero_point": 0})
    document["preprocess"].update(preprocess)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("slidelite_metadata.json", json.dumps(document))
    assert compat.tflite_custom_ops(str(path)) == ([custom_op] if custom_op else [])
    return path


def test_models_browsers_cannot_run_are_refused(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(ROOT / "slidelite" / "models" / "slide_swin_micro_fmnist.onnx"))
    model.graph.node[3].domain = "com.example.custom"
    model.opset_import.append(onnx.helper.make_opsetid("com.example.custom", 1))
    custom = tmp_path / "custom_op.onnx"
    onnx.save(model, str(custom))
    op = f"com.example.custom::{model.graph.node[3].op_type}"
    one_line_error(run_subprocess(["web", "-m", str(custom), "-o", str(tmp_path / "a")]), 1, op, "custom operator")
    tflite = ROOT / "slidelite" / "models" / "slide_swin_micro_fmnist.tflite"
    assert compat.tflite_custom_ops(str(tflite)) == []
    for variant, words in [(dict(custom_op="SlideliteTestOp"), "cannot run the custom operator(s) SlideliteTestOp"),
                           (dict(color_mode="L", mean=[0.0]), "feeds RGB images, this model takes colour mode L"),
                           (dict(dtype="int8"), "takes float32 or uint8 image inputs, not int8")]:
        bad = repack_tflite(tflite, tmp_path / "bad.tflite", **variant)
        one_line_error(run_subprocess(["web", "-m", str(bad), "-o", str(tmp_path / "b")]), 1, "MediaPipe Tasks Web", words)
    bare = make_fixture_onnx(tmp_path / "bare.onnx", embed=False)
    one_line_error(run_subprocess(["web", "-m", str(bare), "-o", str(tmp_path / "c")]), 1, "no slidelite metadata")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_oversized_model_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(compat, "MAX_MODEL_BYTES", 1 << 20)
    with pytest.raises(ModelError, match=r"5 MiB is too large for a phone's browser \(limit 1 MiB\)"):
        build_site(None, str(tmp_path / "site"))


def test_unreachable_registry_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    unreachable_registry(monkeypatch)
    run = run_subprocess(["web", "-o", str(tmp_path / "site"), "--cache-dir", str(tmp_path / "cache")])
    one_line_error(run, 1, "cannot download onnxruntime-web 1.31.1 from http://127.0.0.1:9/onnxruntime-web/-/",
                   "--runtime-dir")
    assert not (tmp_path / "site").exists()


class _WrongTarball(BaseHTTPRequestHandler):
    """A registry that answers every download with bytes that are not the pinned tarball."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"\x1f\x8b not the package")

    def log_message(self, *args: Any) -> None:
        pass


def test_tampered_download_fails_integrity_and_is_not_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WrongTarball)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(REGISTRY_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(Exception, match="does not match its pinned sha512 integrity"):
            fetch_tarball(ONNXRUNTIME_WEB, str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []


def test_runtime_dir_builds_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_site: Path) -> None:
    modules = tmp_path / "node_modules"
    with tarfile.open(fetch_tarball(ONNXRUNTIME_WEB)) as archive:  # what `npm install` unpacks
        members = [m for m in archive.getmembers() if m.name in ("package/package.json", "package/dist/ort.wasm.min.mjs")
                   or m.name.startswith("package/dist/ort-wasm-simd-threaded.")]
        archive.extractall(tmp_path / "unpacked", members=members, filter="data")
    modules.mkdir()
    (tmp_path / "unpacked" / "package").rename(modules / "onnxruntime-web")
    unreachable_registry(monkeypatch)
    out = tmp_path / "site"
    run = run_subprocess(["web", "-o", str(out), "--runtime-dir", str(modules), "--cache-dir", str(tmp_path / "empty")])
    assert run.exit_code == 0, run.stderr
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.wasm"):
        assert (out / "runtime" / name).read_bytes() == (onnx_site / "runtime" / name).read_bytes()
    package_json = modules / "onnxruntime-web" / "package.json"
    package_json.write_text(json.dumps({**json.loads(package_json.read_text()), "version": "1.20.0"}))
    run = run_subprocess(["web", "-o", str(out), "--runtime-dir", str(modules)])
    one_line_error(run, 1, "onnxruntime-web 1.20.0 is installed", "npm install onnxruntime-web@1.31.1")


@pytest.fixture
def https_server(tmp_path: Path, onnx_site: Path) -> Iterator[Dict[str, Any]]:
    """``slidelite web --https --host 127.0.0.1 --port 0`` running; its URL and first output lines."""
    proc = subprocess.Popen([sys.executable, "-m", "slidelite", "web", "-m", "slide_swin_micro_fmnist", "-o",
                             str(tmp_path / "site"), "--https", "--host", "127.0.0.1", "--port", "0", "--cache-dir",
                             str(cache_dir())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            restore_signals=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = [proc.stdout.readline() for _ in range(2)]
    url = re.search(r"serving .* at (https://\S+) ", lines[1])
    try:
        assert url, (lines, proc.stderr.read() if proc.poll() is not None else "")
        yield {"url": url.group(1), "proc": proc, "lines": lines}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_serve_https_with_a_self_signed_certificate_and_qr_code(https_server: Dict[str, Any]) -> None:
    url = https_server["url"]
    assert url.startswith("https://127.0.0.1:")
    qr = https_server["proc"].stdout.readline()
    assert "█" in qr  # the QR code (segno) starts right after the URL
    certificate, _ = ensure_certificate(cache_dir(), ["127.0.0.1", lan_address()])  # the one the server made
    context = ssl.create_default_context(cafile=str(certificate))  # verifies the chain and the IP address
    with urllib.request.urlopen(url + "runtime/ort-wasm-simd-threaded.wasm", context=context, timeout=30) as response:
        assert response.headers["Content-Type"] == "application/wasm"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.read(4) == b"\0asm"
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        assert b'<script type="module" src="app.js">' in response.read()
