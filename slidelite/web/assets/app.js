// The page: loads config.json (written by `slidelite web`), creates the runtime, and classifies a picked or
// dropped photo or the camera stream; shows the top-k, the latency, and a benchmark report.
import { preprocess, toTensor } from "./preprocess.js";
import { createEngine } from "./engines.js";
import { benchmark } from "./bench.js";

const $ = (id) => document.getElementById(id);
const page = { config: null, engine: null, initMs: null, stream: null, last: null };
window.slidelite = page; // for tests and the curious: the last result, the config, the engine

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
  if (kind === "error") document.body.dataset.error = text;
}

function topK(scores, labels, k) {
  const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]);
  return order.slice(0, k).map((index) => ({ index, label: labels[index], score: scores[index] }));
}

function render(result) {
  const list = $("results");
  list.replaceChildren(...result.categories.map((c) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = c.label;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = c.score.toFixed(3);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, c.score * 100)}%`;
    item.append(label, score, bar);
    return item;
  }));
  const t = result.timings;
  $("latency").textContent = `preprocess ${t.preprocess_ms.toFixed(1)} ms · inference ${t.inference_ms.toFixed(1)} ms · ` +
    `total ${t.total_ms.toFixed(1)} ms (${page.engine.name} ${page.engine.provider})`;
}

/** Classify RGBA pixels: preprocess, run, top-k; remembers the result (tensor included) in page.last. */
async function classifyPixels(rgba, width, height, source) {
  const meta = page.config.metadata;
  const t0 = performance.now();
  const { image, tensor } = preprocess(rgba, width, height, meta);
  const t1 = performance.now();
  const scores = await page.engine.run(tensor, image);
  const t2 = performance.now();
  const categories = topK(scores, meta.labels, page.config.top_k);
  page.last = { source, categories, tensor, timings: { preprocess_ms: t1 - t0, inference_ms: t2 - t1, total_ms: t2 - t0 } };
  render(page.last);
  return page.last;
}

function drawToPreview(source, width, height) {
  const canvas = $("preview");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  canvas.hidden = false;
  $("placeholder").hidden = true;
  return ctx.getImageData(0, 0, width, height).data;
}

async function classifyFile(file) {
  if (!file) return;
  if (!page.engine) { showMessage("The model is still loading: try again in a moment."); return; }
  stopCamera();
  showMessage("");
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`${file.name}: not an image file (${file.type}); pick a photo (JPEG, PNG, WebP, …).`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    showMessage(`${file.name}: not an image file (the browser cannot decode it); pick a photo (JPEG, PNG, WebP, …).`);
    return;
  }
  $("video").hidden = true;
  const pixels = drawToPreview(bitmap, bitmap.width, bitmap.height);
  await classifyPixels(pixels, bitmap.width, bitmap.height, file.name);
  bitmap.close();
  document.body.dataset.classified = String(Number(document.body.dataset.classified || 0) + 1);
}

function cameraProblem(error) {
  if (!window.isSecureContext) return "The camera needs a secure page: open the https:// address (slidelite web --serve --https) or localhost.";
  if (error?.name === "NotAllowedError" || error?.name === "SecurityError") {
    return "Camera permission denied: allow the camera for this site in the browser's settings, or pick a photo instead.";
  }
  if (error?.name === "NotFoundError" || error?.name === "OverconstrainedError") return "No camera found: pick a photo instead.";
  if (error?.name === "NotReadableError") return "The camera is in use by another app: close it and try again.";
  return `The camera cannot be opened (${error?.name || "no camera API"}): pick a photo instead.`;
}

async function startCamera() {
  if (page.stream) { stopCamera(); return; }
  showMessage("");
  if (!navigator.mediaDevices?.getUserMedia) { showMessage(cameraProblem(null)); return; }
  try {
    page.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
  } catch (error) {
    showMessage(cameraProblem(error));
    return;
  }
  const video = $("video");
  video.srcObject = page.stream;
  await video.play();
  video.hidden = false;
  $("preview").hidden = true;
  $("placeholder").hidden = true;
  $("camera-button").textContent = "Stop";
  const frame = async () => {
    if (!page.stream) return;
    if (video.videoWidth) {
      const pixels = drawToPreview(video, video.videoWidth, video.videoHeight);
      $("preview").hidden = true;
      await classifyPixels(pixels, video.videoWidth, video.videoHeight, "camera");
      document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function stopCamera() {
  if (!page.stream) return;
  page.stream.getTracks().forEach((track) => track.stop());
  page.stream = null;
  $("video").hidden = true;
  $("camera-button").textContent = "Camera";
}

async function runBenchmark() {
  const button = $("bench-button");
  button.disabled = true;
  showMessage("Benchmarking: 1 first run, 5 warm-up runs, 50 timed runs…", "info");
  try {
    const report = await benchmark(page.engine, page.config, toTensor, { initMs: page.initMs });
    const s = report.targets[0].latency_ms;
    $("bench-summary").textContent = `Benchmark: init ${page.initMs.toFixed(0)} ms · first ${report.targets[0].first_inference_ms.toFixed(1)} ms · ` +
      `p50 ${s.p50.toFixed(1)} · p90 ${s.p90.toFixed(1)} · p99 ${s.p99.toFixed(1)} ms`;
    $("bench-json").textContent = JSON.stringify(report, null, 1);
    $("bench").hidden = false;
    $("bench").open = true;
    showMessage("", "info");
    page.benchmark = report;
  } catch (error) {
    showMessage(`Benchmark failed: ${error.message || error}`);
  } finally {
    button.disabled = false;
  }
}

function wireUp() {
  $("file-input").addEventListener("change", (e) => classifyFile(e.target.files[0]).catch((err) => showMessage(String(err))));
  $("camera-button").addEventListener("click", () => startCamera().catch((err) => showMessage(cameraProblem(err))));
  $("bench-button").addEventListener("click", runBenchmark);
  const view = $("view");
  for (const name of ["dragenter", "dragover"]) view.addEventListener(name, (e) => { e.preventDefault(); view.classList.add("dragging"); });
  view.addEventListener("dragleave", () => view.classList.remove("dragging"));
  view.addEventListener("drop", (e) => {
    e.preventDefault();
    view.classList.remove("dragging");
    classifyFile(e.dataTransfer.files[0]).catch((err) => showMessage(String(err)));
  });
}

async function main() {
  window.addEventListener("unhandledrejection", (e) => showMessage(`Error: ${e.reason?.message || e.reason}`));
  if ("serviceWorker" in navigator && window.isSecureContext) {
    navigator.serviceWorker.register("sw.js").catch((err) => console.warn("offline cache unavailable:", err));
  }
  wireUp();
  const response = await fetch("config.json");
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}; rebuild the site with slidelite web`);
  const config = await response.json();
  page.config = config;
  const meta = config.metadata;
  $("model-name").textContent = meta.name;
  $("model-info").textContent = `${meta.labels.length} classes · ${meta.input.width}×${meta.input.height} ${meta.preprocess.color_mode} · ` +
    `${config.model.format} ${meta.precision} · ${(config.model.size_bytes / 1048576).toFixed(1)} MiB · loading ${config.runtime.package}…`;
  $("footer").textContent = `slidelite ${config.slidelite_version} · ${config.runtime.package} ${config.runtime.version} · runs on this device, offline once loaded`;
  const t0 = performance.now();
  page.engine = await createEngine(config);
  page.initMs = performance.now() - t0;
  $("model-info").textContent = $("model-info").textContent.replace(/loading .*/, `${page.engine.name} ${page.engine.provider} ready in ${page.initMs.toFixed(0)} ms`);
  $("camera-button").disabled = false;
  $("bench-button").disabled = false;
  document.body.dataset.state = "ready";
}

main().catch((error) => {
  document.body.dataset.state = "failed";
  showMessage(`The model cannot be loaded: ${error.message || error}`);
});
