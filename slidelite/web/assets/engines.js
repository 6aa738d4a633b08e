// The two browser runtimes behind one interface:
//   engine.run(tensor, image) -> Float32Array of class probabilities (softmax applied to logits)
// onnxruntime-web takes slidelite's input tensor; MediaPipe Tasks Web (ImageClassifier) takes the
// model-sized image made by slidelite's resize + crop and normalizes it per the TFLite Metadata.

const siteUrl = (path) => new URL(path, document.baseURI).href;

/** Class probabilities from a raw output: dequantized, softmax when the model outputs logits. */
export function probabilities(raw, meta) {
  const q = meta.output.quantization;
  const values = Float64Array.from(raw, (v) => (q ? (Number(v) - q.zero_point) * q.scale : Number(v)));
  if (meta.output.kind !== "logits") return Float32Array.from(values);
  const max = values.reduce((a, b) => Math.max(a, b), -Infinity);
  let sum = 0;
  for (let i = 0; i < values.length; i++) { values[i] = Math.exp(values[i] - max); sum += values[i]; }
  return Float32Array.from(values, (v) => v / sum);
}

class OnnxEngine {
  static async create(config) {
    const ort = await import(siteUrl(config.runtime.module));
    ort.env.wasm.wasmPaths = siteUrl("runtime/");
    // WebAssembly threads need a cross-origin isolated page (slidelite web --serve sends the headers);
    // ?threads=N overrides the default (up to 4, the number of cores the browser reports)
    const asked = Number(new URLSearchParams(location.search).get("threads"));
    const threads = !self.crossOriginIsolated ? 1 : asked >= 1 ? asked : Math.min(navigator.hardwareConcurrency || 1, 4);
    ort.env.wasm.numThreads = threads;
    let provider = "wasm";
    if (config.runtime.webgpu && navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null))) provider = "webgpu";
    const session = await ort.InferenceSession.create(siteUrl(config.model.file), {
      executionProviders: provider === "webgpu" ? ["webgpu", "wasm"] : ["wasm"], graphOptimizationLevel: "all",
    });
    return new OnnxEngine(ort, session, config, provider, threads);
  }

  constructor(ort, session, config, provider, threads) {
    Object.assign(this, { ort, session, provider, threads, meta: config.metadata });
    this.name = "onnxruntime-web";
    this.version = config.runtime.version;
    this.takesTensor = true;
    const inp = config.metadata.input, channels = config.metadata.preprocess.color_mode === "L" ? 1 : 3;
    this.inputName = session.inputNames[0];
    this.inputShape = inp.layout === "NHWC" ? [1, inp.height, inp.width, channels] : [1, channels, inp.height, inp.width];
    this.inputDtype = inp.dtype;
  }

  async run(tensor) {
    const input = new this.ort.Tensor(this.inputDtype, tensor, this.inputShape);
    const outputs = await this.session.run({ [this.inputName]: input });
    return probabilities(outputs[this.session.outputNames[0]].data, this.meta);
  }
}

class MediaPipeEngine {
  static async create(config) {
    const vision = await import(siteUrl(config.runtime.module));
    const fileset = { wasmLoaderPath: siteUrl("runtime/vision_wasm_internal.js"),
                      wasmBinaryPath: siteUrl("runtime/vision_wasm_internal.wasm") };
    const classifier = await vision.ImageClassifier.createFromOptions(fileset, {
      baseOptions: { modelAssetPath: siteUrl(config.model.file), delegate: "CPU" }, maxResults: -1, runningMode: "IMAGE",
    });
    return new MediaPipeEngine(classifier, config);
  }

  constructor(classifier, config) {
    Object.assign(this, { classifier, meta: config.metadata });
    this.name = "mediapipe-tasks-vision";
    this.version = config.runtime.version;
    this.provider = "wasm";
    this.threads = 1;
    this.takesTensor = false;
    const inp = config.metadata.input;
    this.inputName = inp.name;
    this.inputShape = [1, inp.height, inp.width, 3];
    this.inputDtype = inp.dtype;
  }

  async run(tensor, image) {
    const rgba = new Uint8ClampedArray(image.width * image.height * 4);
    for (let i = 0; i < image.width * image.height; i++) {
      rgba.set(image.data.subarray(i * 3, i * 3 + 3), i * 4);
      rgba[i * 4 + 3] = 255;
    }
    const result = this.classifier.classify(new ImageData(rgba, image.width, image.height));
    const raw = new Float32Array(this.meta.labels.length);
    for (const c of result.classifications[0].categories) raw[c.index] = c.score;
    return probabilities(raw, this.meta);
  }
}

/** The engine for the site's model format (config.runtime.kind). */
export function createEngine(config) {
  return config.runtime.kind === "onnxruntime-web" ? OnnxEngine.create(config) : MediaPipeEngine.create(config);
}
