"""``slidelite web`` sites in a real browser: Debian's Chromium driven by Playwright, served on 127.0.0.1.

The page's JavaScript preprocessing is checked against :mod:`slidelite.preprocess` (the input tensor within
1/255 per value; in practice identical) and its classification against the Python runtime (top-5 labels equal,
scores within 1e-3) for the default model through onnxruntime-web (.onnx) and MediaPipe Tasks Web (.tflite)
and for the Fashion-MNIST Slide model; the camera is Chromium's fake device playing a .y4m written here from a
real photo. The runtime packages come from the npm registry through the code path users run (cached in the
user cache folder, or $SLIDELITE_WEB_CACHE).

Set SLIDELITE_WEB_SCREENSHOTS=DIR to keep the phone-sized screenshots (docs/web.md shows web-photo-onnx,
web-camera, web-camera-denied and web-benchmark).
"""
from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import pytest
from PIL import Image

from slidelite import Classifier
from slidelite.bench import BenchSettings, TargetSpec, run_benchmark
from slidelite.image import load_image
from slidelite.metadata import metadata_from_dict
from slidelite.model_file import open_model_file
from slidelite.preprocess import preprocess
from slidelite.web import build_site
from slidelite.web.serve import make_server
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "slidelite" / "samples"
PHOTOS = (SAMPLES / "chelsea.jpg", SAMPLES / "fashion_mnist_ankle_boot.png")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
LOAD_TIMEOUT_MS = 60_000
SITES = {"onnx": (None, "onnx"), "tflite": (None, "tflite"), "fmnist": ("slide_swin_micro_fmnist", "onnx"),
         "fmnist-tflite": ("slide_swin_micro_fmnist", "tflite"), "int8": ("fixture", "onnx")}


def write_y4m(photo: Path, path: Path, frames: int = 3) -> None:
    """A 4:2:0 Y4M video of ``photo`` (BT.601 limited range, what Chromium's fake camera expects)."""
    img = Image.open(photo).convert("RGB")
    img = img.crop((0, 0, img.width // 2 * 2, img.height // 2 * 2))
    rgb = np.asarray(img, dtype=np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b

    def sub(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(plane.shape[0] // 2, 2, plane.shape[1] // 2, 2).mean(axis=(1, 3))

    planes = b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in (y, sub(u), sub(v)))
    header = f"YUV4MPEG2 W{img.width} H{img.height} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + b"".join(b"FRAME\n" + planes for _ in range(frames)))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """Sites for the default model (.onnx and .tflite), the Fashion-MNIST model and an int8-input NHWC fixture
    model, served from one folder on 127.0.0.1."""
    root = tmp_path_factory.mktemp("sites")
    int8_model = make_fixture_onnx(root / "fixture_int8.onnx", layout="NHWC", dtype="int8", output_dtype="uint8",
                                   interpolation="bilinear")
    for key, (model, fmt) in SITES.items():
        build_site(str(int8_model) if model == "fixture" else model, str(root / key), fmt)
    server = make_server(root, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "url": f"http://127.0.0.1:{server.server_address[1]}/"}
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium with a fake camera playing the bundled cat photo."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run scripts/system_packages.sh (installs the Debian package chromium)")
    from playwright.sync_api import sync_playwright

    video = tmp_path_factory.mktemp("camera") / "chelsea.y4m"
    write_y4m(PHOTOS[0], video)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}"])
        yield chromium
        chromium.close()


def open_page(browser: Any, url: str) -> Any:
    """A phone-sized page on ``url`` in a new browser context (no permissions), waited until the model is loaded."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-state=ready], body[data-state=failed]", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.evaluate("document.body.dataset.error")
    return page


@pytest.fixture(scope="module")
def pages(browser: Any, sites: Dict[str, Any]) -> Iterator[Callable[[str], Any]]:
    """One loaded page per site, shared by the tests (loading a runtime costs seconds)."""
    opened: Dict[str, Any] = {}

    def get(site: str) -> Any:
        if site not in opened:
            opened[site] = open_page(browser, sites["url"] + f"{site}/")
        return opened[site]

    yield get
    for page in opened.values():
        page.context.close()


def upload(page: Any, path: Path) -> Dict[str, Any]:
    """Pick ``path`` in the page's file input, wait for its classification, return the result."""
    done = int(page.evaluate("document.body.dataset.classified || 0"))
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(f"body[data-classified='{done + 1}']", timeout=LOAD_TIMEOUT_MS)
    return page.evaluate("({categories: slidelite.last.categories, timings: slidelite.last.timings,"
                         " tensor: Array.from(slidelite.last.tensor)})")


def screenshot(page: Any, name: str) -> None:
    """Keep a screenshot in $SLIDELITE_WEB_SCREENSHOTS (for docs/web.md) when set; check it is not blank."""
    png = page.screenshot()
    assert len(np.unique(np.asarray(Image.open(io.BytesIO(png)).convert("L")))) > 16, "blank page"
    folder = os.environ.get("SLIDELITE_WEB_SCREENSHOTS")
    if folder:
        Image.open(io.BytesIO(png)).convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(
            Path(folder) / f"web-{name}.png", optimize=True)


def python_result(model: Path, photo: Path) -> Dict[str, Any]:
    """The Python runtime's input tensor and top-5 on ``photo``."""
    metadata = open_model_file(model).metadata
    with Classifier.from_file(str(model)) as classifier:
        categories = classifier.classify(str(photo)).categories[:5]
    return {"tensor": preprocess(load_image(str(photo)), metadata).ravel(),
            "labels": [c.label for c in categories], "scores": np.array([c.score for c in categories])}


@pytest.mark.parametrize("site", list(SITES))
def test_page_matches_python_runtime(pages: Callable[[str], Any], sites: Dict[str, Any], site: str) -> None:
    page = pages(site)
    config = json.loads((sites["root"] / site / "config.json").read_text(encoding="utf-8"))
    model = sites["root"] / site / config["model"]["file"]
    for photo in PHOTOS:
        web = upload(page, photo)
        expected = python_result(model, photo)
        diff = np.abs(np.asarray(web["tensor"], dtype=np.float64) - expected["tensor"]).max()
        scores = np.array([c["score"] for c in web["categories"]])
        print(f"{site} {photo.name}: tensor max |diff| {diff:.3g}, score max |diff| "
              f"{np.abs(scores - expected['scores']).max():.3g}, browser total {web['timings']['total_ms']:.1f} ms")
        assert diff <= 1 / 255
        assert [c["label"] for c in web["categories"]] == expected["labels"]
        np.testing.assert_allclose(scores, expected["scores"], atol=1e-3)
    screenshot(page, f"photo-{site}")


def variant_photos(tmp_path: Path) -> List[Path]:
    """Real photos in shapes that take every branch of the resize: landscape JPEG, portrait PNG, an image
    smaller than the model input (upsampling), RGBA with transparency, and an extreme strip (box resize)."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    photos = {"portrait.png": astronaut.crop((60, 0, 360, 451)), "small.png": astronaut.resize((21, 13)),
              "strip.png": astronaut.resize((12000, 2))}
    rgba = astronaut.convert("RGBA").resize((97, 64))
    rgba.putalpha(Image.linear_gradient("L").resize((97, 64)).point(lambda v: 255 if v > 128 else v))
    photos["alpha.png"] = rgba
    paths = [PHOTOS[0]]
    for name, img in photos.items():
        img.save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


VARIANTS = [dict(interpolation=i, crop_pct=c) for i in ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
            for c in (0.875, 1.0)] + [
    dict(resize_mode="squash"), dict(layout="NHWC", color_mode="L"), dict(dtype="int8"), dict(dtype="uint8"),
    dict(size=40, crop_pct=0.95, color_mode="L", interpolation="lanczos")]


def test_javascript_preprocessing_matches_python_for_every_variant(pages: Callable[[str], Any], tmp_path: Path) -> None:
    """preprocess.js on the browser's decoded pixels = slidelite.preprocess on Pillow's, for every interpolation,
    crop_pct, resize mode, layout, colour mode and input dtype the metadata allows."""
    page = pages("fmnist")
    worst = 0.0
    for photo in variant_photos(tmp_path):
        documents = [fixture_metadata(**variant) for variant in VARIANTS]
        tensors = page.evaluate("""async ([bytes, documents]) => {
            const { preprocess } = await import("./preprocess.js");
            const bitmap = await createImageBitmap(new Blob([new Uint8Array(bytes)]),
                { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
            const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
            const ctx = canvas.getContext("2d");
            ctx.drawImage(bitmap, 0, 0);
            const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
            return documents.map((meta) => Array.from(preprocess(rgba, bitmap.width, bitmap.height, meta).tensor));
        }""", [list(photo.read_bytes()), documents])
        image = load_image(str(photo))
        for variant, document, tensor in zip(VARIANTS, documents, tensors):
            expected = preprocess(image, metadata_from_dict(document)).ravel().astype(np.float64)
            diff = np.abs(np.asarray(tensor, dtype=np.float64) - expected)
            if image.mode == "RGBA":  # canvases keep premultiplied alpha: a translucent pixel may be a level off
                allowed = (1.0 if document["input"]["dtype"] != "float32"
                           else 1 / (255 * min(document["preprocess"]["std"])) + 1e-6)
            else:
                allowed, worst = 0.0, max(worst, float(diff.max()))
            assert diff.max() <= allowed, f"{photo.name} {variant}: max |diff| {diff.max()}"
    print(f"preprocess.js vs slidelite.preprocess, opaque photos, {len(VARIANTS)} variants: max |diff| {worst}")


def test_mediapipe_own_resize_differs_so_the_page_feeds_it_slidelite_preprocessing(
        pages: Callable[[str], Any], sites: Dict[str, Any]) -> None:
    """MediaPipe's ImageClassifier resizes whole images its own way (no crop_pct/antialias): measured here, it
    moves the scores far beyond 1e-3, which is why the page hands it the image slidelite's resize + crop made."""
    page = pages("tflite")
    model = sites["root"] / "tflite" / "model" / "efficientnet_lite0.tflite"
    expected = python_result(model, PHOTOS[0])
    own = np.array(page.evaluate("""async (bytes) => {
        const { probabilities } = await import("./engines.js");
        const bitmap = await createImageBitmap(new Blob([new Uint8Array(bytes)]));
        const raw = new Float32Array(slidelite.config.metadata.labels.length);
        for (const c of slidelite.engine.classifier.classify(bitmap).classifications[0].categories) raw[c.index] = c.score;
        return Array.from(probabilities(raw, slidelite.config.metadata));
    }""", list(PHOTOS[0].read_bytes())))
    labels = open_model_file(model).metadata.labels
    top = [labels[i] for i in np.argsort(-own)[:5]]
    diff = max(abs(own[labels.index(label)] - score) for label, score in zip(expected["labels"], expected["scores"]))
    print(f"MediaPipe's own preprocessing on {PHOTOS[0].name}: top-5 {top}, max |score diff| vs Python {diff:.3f}")
    assert diff > 1e-3


def test_camera_frames_are_classified(pages: Callable[[str], Any]) -> None:
    page = pages("onnx")
    page.context.grant_permissions(["camera"])
    try:
        page.click("#camera-button")
        page.wait_for_function("Number(document.body.dataset.frames || 0) >= 3", timeout=LOAD_TIMEOUT_MS)
        top = page.evaluate("slidelite.last.categories")
        assert page.evaluate("slidelite.last.source") == "camera"
        assert top[0]["label"] in CATS, top
        assert page.evaluate("slidelite.stream.getVideoTracks()[0].getSettings().width") > 0
        screenshot(page, "camera")
        page.click("#camera-button")  # stops the camera
        assert page.evaluate("slidelite.stream") is None
    finally:
        page.context.clear_permissions()


def test_denied_camera_and_non_image_files_show_a_message(pages: Callable[[str], Any], tmp_path: Path) -> None:
    page = pages("onnx")  # no camera permission granted: getUserMedia is refused
    page.click("#camera-button")
    page.wait_for_selector("#message:not([hidden])")
    assert "Camera permission denied" in page.inner_text("#message")
    screenshot(page, "camera-denied")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    page.set_input_files("#file-input", str(notes))
    page.wait_for_function("document.querySelector('#message').textContent.includes('notes.txt')")
    assert "not an image file" in page.inner_text("#message")
    fake = tmp_path / "broken.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    page.set_input_files("#file-input", str(fake))
    page.wait_for_function("document.querySelector('#message').textContent.includes('broken.jpg')")
    assert "cannot decode" in page.inner_text("#message")
    assert page.is_visible("#camera-button") and page.is_visible("#photo-button")  # never a blank page
    web = upload(page, PHOTOS[0])  # and a good photo afterwards still classifies
    assert web["categories"][0]["label"] in CATS
    assert page.is_hidden("#message")


def test_dropped_photo_is_classified(pages: Callable[[str], Any]) -> None:
    page = pages("onnx")
    done = int(page.evaluate("document.body.dataset.classified || 0"))
    page.evaluate("""(bytes) => {
        const files = new DataTransfer();
        files.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" }));
        document.getElementById("view").dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true }));
    }""", list(PHOTOS[0].read_bytes()))
    page.wait_for_selector(f"body[data-classified='{done + 1}']", timeout=LOAD_TIMEOUT_MS)
    assert page.evaluate("slidelite.last.source") == "dropped.jpg"
    assert page.evaluate("slidelite.last.categories[0].label") in CATS


def test_benchmark_report_has_the_slidelite_bench_schema(pages: Callable[[str], Any]) -> None:
    page = pages("fmnist")
    page.click("#bench-button")
    page.wait_for_selector("#bench:not([hidden])", timeout=LOAD_TIMEOUT_MS)
    report = json.loads(page.inner_text("#bench-json"))
    python = run_benchmark([TargetSpec("slide_swin_micro_fmnist", "onnxruntime")], BenchSettings(warmup=0, runs=1))
    assert set(report) == set(python)
    assert report["schema"] == python["schema"] and report["schema_version"] == python["schema_version"]
    target, reference = report["targets"][0], python["targets"][0]
    assert set(target) == set(reference)
    assert set(target["latency_ms"]) == set(reference["latency_ms"])
    assert set(reference["model"]) == set(target["model"])
    stats = target["latency_ms"]
    assert stats["count"] == 50 == len(target["samples_ms"])
    assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert target["init_ms"] > 0 and target["first_inference_ms"] > 0
    device = report["device"]
    assert device["user_agent"] == page.evaluate("navigator.userAgent")
    assert device["hardware_concurrency"] == page.evaluate("navigator.hardwareConcurrency")
    assert device["backend"] == "wasm"
    print(f"browser benchmark ({device['user_agent']}): init {target['init_ms']:.0f} ms, first "
          f"{target['first_inference_ms']:.1f} ms, p50 {stats['p50']:.1f} p90 {stats['p90']:.1f} p99 {stats['p99']:.1f} ms")
    screenshot(page, "benchmark")


def test_page_works_offline_once_loaded(pages: Callable[[str], Any]) -> None:
    page = pages("fmnist")
    assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")  # installed: every file is cached
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=LOAD_TIMEOUT_MS)  # clients.claim()
    page.context.set_offline(True)
    try:
        page.reload()
        page.wait_for_selector("body[data-state=ready], body[data-state=failed]", timeout=LOAD_TIMEOUT_MS)
        assert page.evaluate("document.body.dataset.state") == "ready"
        # really offline: a file the service worker has not cached cannot be fetched (navigator.onLine is not a
        # reliable witness: Debian's Chromium 150 keeps it true under Playwright's offline emulation after a reload)
        assert page.evaluate("fetch('not-cached-' + Date.now() + '.txt', {cache: 'no-store'})"
                             ".then(() => 'fetched', () => 'failed')") == "failed"
        web = upload(page, PHOTOS[1])
        assert web["categories"][0]["label"] == "Ankle boot"
    finally:
        page.context.set_offline(False)
