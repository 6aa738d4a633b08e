// In-browser latency test: the same JSON report as `slidelite bench --json` (schema slidelite.bench v1).

/** numpy.percentile's default (linear interpolation) on sorted values. */
export function percentile(sorted, p) {
  const pos = ((sorted.length - 1) * p) / 100;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** min, mean, std (population), p50, p90, p99, max of samples in ms. */
export function latencyStats(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  const std = Math.sqrt(samples.reduce((a, b) => a + (b - mean) ** 2, 0) / samples.length);
  return { count: samples.length, min: sorted[0], mean, std, p50: percentile(sorted, 50), p90: percentile(sorted, 90),
           p99: percentile(sorted, 99), max: sorted[sorted.length - 1] };
}

/** A fixed pseudo-random input (the benchmark does not depend on a photo). */
function fixedInput(meta) {
  const [h, w] = [meta.input.height, meta.input.width];
  const channels = meta.preprocess.color_mode === "L" ? 1 : 3;
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  return { data: Uint8Array.from({ length: w * h * channels }, () => Math.floor(next() * 256)), width: w, height: h, channels };
}

async function timed(fn) {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * Time `engine` like `slidelite bench`: the first run, `warmup` untimed runs, then `runs` timed runs.
 * onnxruntime-web is timed on inference alone; MediaPipe (which takes images) on its classify call.
 */
export async function benchmark(engine, config, toTensor, { warmup = 5, runs = 50, initMs = null } = {}) {
  const meta = config.metadata;
  const image = fixedInput(meta);
  const tensor = toTensor(image, meta);
  const call = () => engine.run(tensor, image);
  const first = await timed(call);
  const warm = [];
  for (let i = 0; i < warmup; i++) warm.push(await timed(call));
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await timed(call));
  const stats = latencyStats(samples);
  const label = config.model.name;
  return {
    schema: "slidelite.bench", schema_version: 1, tool: `slidelite web ${config.slidelite_version}`,
    mode: engine.takesTensor ? "inference" : "classify", includes_preprocessing: !engine.takesTensor,
    settings: { warmup, runs, min_seconds: 0, threads: engine.threads, with_preprocess: false, image: null },
    interleaved: false, schedule: samples.map(() => label),
    targets: [{
      label,
      model: { path: config.model.file, format: config.model.format, size_bytes: config.model.size_bytes,
               sha256: config.model.sha256, name: meta.name, precision: meta.precision,
               input_size: [meta.input.height, meta.input.width] },
      backend: { name: engine.name, version: engine.version, threads_requested: null, threads: engine.threads,
                 execution_provider: engine.provider, input_name: engine.inputName, input_shape: engine.inputShape,
                 input_dtype: engine.inputDtype },
      init_ms: initMs, first_inference_ms: first,
      warmup: { count: warm.length, mean_ms: warm.length ? warm.reduce((a, b) => a + b, 0) / warm.length : null },
      latency_ms: stats, throughput_per_s: stats.mean > 0 ? 1000 / stats.mean : null, stages_mean_ms: {},
      samples_ms: samples,
    }],
    peak_rss_mb: null,
    device: { runner: "browser", user_agent: navigator.userAgent, hardware_concurrency: navigator.hardwareConcurrency ?? null,
              backend: engine.provider, cross_origin_isolated: self.crossOriginIsolated === true,
              platform: navigator.userAgentData?.platform ?? navigator.platform ?? null,
              slidelite: config.slidelite_version, measured_at: new Date().toISOString() },
  };
}
