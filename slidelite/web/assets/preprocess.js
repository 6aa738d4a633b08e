// slidelite preprocessing in JavaScript: the same metadata, the same steps, the same numbers as
// slidelite/preprocess.py (timm's eval transform on Pillow images). One spec, two implementations:
//   1. colour mode (RGB, or L with Pillow's ITU-R 601-2 integer luma); transparency composited onto white
//   2. resize (Pillow's separable two-pass resample, 8-bit fixed point, antialiased filter supports) to
//      floor(size / crop_pct) on the shorter side (or both sides for "squash")
//   3. centre crop, offsets round-half-even((size - crop) / 2)
//   4. x = pixel * gain + offset in float32, gain = 1 / (255 std), offset = -mean / std
//   5. NCHW or NHWC, batch of one; 6. int8/uint8 inputs quantized with round-half-even and clipped.

const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const MAX_RESIZED_PIXELS = 1 << 22;

function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow's filters and their supports (src/libImaging/Resample.c)
const FILTERS = {
  box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1 : 0)],
  bilinear: [1, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
  hamming: [1, (x) => {
    x = Math.abs(x);
    if (x === 0) return 1;
    if (x >= 1) return 0;
    x *= Math.PI;
    return (Math.sin(x) / x) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(x));
  }],
  bicubic: [2, (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }],
  lanczos: [3, (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0)],
};

/** Python's round(): half to even. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: bounds and fixed-point weights per output pixel. */
function coefficients(inSize, in0, in1, outSize, filterName) {
  const [filterSupport, filter] = FILTERS[filterName];
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterSupport * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = filter((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      weights[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, weights, ksize };
}

function clip8(sum) {
  const v = Math.floor(sum / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** One pass over `rows` rows of an interleaved image (horizontal) or columns (vertical). */
function resamplePass(src, srcW, channels, dst, dstW, rows, c, horizontal, rowOffset) {
  const { bounds, weights, ksize } = c;
  const outCount = horizontal ? dstW : rows;
  for (let o = 0; o < outCount; o++) {
    const min = bounds[o * 2];
    const len = bounds[o * 2 + 1];
    const base = o * ksize;
    const others = horizontal ? rows : dstW;
    for (let p = 0; p < others; p++) {
      for (let ch = 0; ch < channels; ch++) {
        let sum = ONE >> 1;
        for (let i = 0; i < len; i++) {
          const idx = horizontal ? ((p + rowOffset) * srcW + min + i) : ((min + i) * srcW + p);
          sum += src[idx * channels + ch] * weights[base + i];
        }
        const out = horizontal ? (p * dstW + o) : (o * dstW + p);
        dst[out * channels + ch] = clip8(sum);
      }
    }
  }
}

/** Pillow's NEAREST resize (ImagingScaleAffine): accumulated source coordinates, truncated. */
function resizeNearest(img, w, h, box) {
  const { data, width, channels } = img;
  const out = new Uint8Array(w * h * channels);
  const ax = Math.fround(Math.fround(box[2]) - Math.fround(box[0])) / w;
  const ay = Math.fround(Math.fround(box[3]) - Math.fround(box[1])) / h;
  const xs = new Int32Array(w);
  let xo = Math.fround(box[0]) + ax * 0.5;
  for (let x = 0; x < w; x++, xo += ax) xs[x] = xo < 0 ? -1 : Math.trunc(xo);
  let yo = Math.fround(box[1]) + ay * 0.5;
  for (let y = 0; y < h; y++, yo += ay) {
    const yi = yo < 0 ? -1 : Math.trunc(yo);
    if (yi < 0 || yi >= img.height) continue;
    for (let x = 0; x < w; x++) {
      if (xs[x] < 0 || xs[x] >= width) continue;
      for (let ch = 0; ch < channels; ch++) out[(y * w + x) * channels + ch] = data[(yi * width + xs[x]) * channels + ch];
    }
  }
  return { data: out, width: w, height: h, channels };
}

/** Pillow's Image.resize(size, filter, box) for 8-bit L/RGB images ({data, width, height, channels}). */
export function resize(img, w, h, interpolation, box = [0, 0, img.width, img.height]) {
  const full = box[0] === 0 && box[1] === 0 && box[2] === img.width && box[3] === img.height;
  if (w === img.width && h === img.height && full) return img;
  if (interpolation === "nearest") return resizeNearest(img, w, h, box);
  const { channels } = img;
  const needH = w !== img.width || box[0] !== 0 || box[2] !== w;
  const needV = h !== img.height || box[1] !== 0 || box[3] !== h;
  const vert = coefficients(img.height, box[1], box[3], h, interpolation);
  let cur = img;
  if (needH) {
    const horiz = coefficients(img.width, box[0], box[2], w, interpolation);
    const first = vert.bounds[0];
    const last = vert.bounds[h * 2 - 2] + vert.bounds[h * 2 - 1];
    for (let i = 0; i < h; i++) vert.bounds[i * 2] -= first;
    const rows = last - first;
    const tmp = new Uint8Array(w * rows * channels);
    resamplePass(img.data, img.width, channels, tmp, w, rows, horiz, true, first);
    cur = { data: tmp, width: w, height: rows, channels };
  }
  if (needV) {
    const out = new Uint8Array(cur.width * h * channels);
    resamplePass(cur.data, cur.width, channels, out, cur.width, h, vert, false, 0);
    cur = { data: out, width: cur.width, height: h, channels };
  }
  return cur;
}

/** RGBA pixels (straight alpha) -> {data, width, height, channels} in the model's colour mode. */
export function toColorMode(rgba, width, height, colorMode) {
  const n = width * height;
  const channels = colorMode === "L" ? 1 : 3;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    let r = rgba[i * 4], g = rgba[i * 4 + 1], b = rgba[i * 4 + 2];
    const a = rgba[i * 4 + 3];
    if (a !== 255) { // onto white, like slidelite.image._composite_on_white
      r = Math.round((r * a + 255 * (255 - a)) / 255);
      g = Math.round((g * a + 255 * (255 - a)) / 255);
      b = Math.round((b * a + 255 * (255 - a)) / 255);
    }
    if (channels === 1) {
      out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; // Pillow's RGB -> L
    } else {
      out[i * 3] = r; out[i * 3 + 1] = g; out[i * 3 + 2] = b;
    }
  }
  return { data: out, width, height, channels };
}

/** slidelite.preprocess.resized_size: the (width, height) before the centre crop. */
export function resizedSize(width, height, meta) {
  const pre = meta.preprocess, inp = meta.input;
  const scaleH = Math.floor(inp.height / pre.crop_pct);
  const scaleW = Math.floor(inp.width / pre.crop_pct);
  if (pre.resize_mode === "squash") return [scaleW, scaleH];
  if (scaleH === scaleW) {
    const short = Math.min(width, height), long = Math.max(width, height);
    const newLong = Math.trunc((scaleH * long) / short);
    return width <= height ? [scaleH, newLong] : [newLong, scaleH];
  }
  const ratio = Math.min(height / scaleH, width / scaleW);
  return [roundHalfEven(width / ratio), roundHalfEven(height / ratio)];
}

/** slidelite.preprocess.resize_and_crop (steps 1-3) on RGBA pixels: the model-sized image. */
export function resizeAndCrop(rgba, width, height, meta) {
  const inp = meta.input, pre = meta.preprocess;
  const img = toColorMode(rgba, width, height, pre.color_mode);
  const [sw, sh] = resizedSize(width, height, meta);
  const top = roundHalfEven((sh - inp.height) / 2);
  const left = roundHalfEven((sw - inp.width) / 2);
  if (sw * sh > MAX_RESIZED_PIXELS) {
    const sx = width / sw, sy = height / sh;
    const box = [left * sx, top * sy, (left + inp.width) * sx, (top + inp.height) * sy];
    return resize(img, inp.width, inp.height, pre.interpolation, box);
  }
  const resized = resize(img, sw, sh, pre.interpolation);
  if (left === 0 && top === 0 && resized.width === inp.width && resized.height === inp.height) return resized;
  return crop(resized, left, top, inp.width, inp.height);
}

/** Pillow's crop: pixels outside the image are zero. */
function crop(img, left, top, w, h) {
  const { data, width, height, channels } = img;
  const out = new Uint8Array(w * h * channels);
  for (let y = 0; y < h; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= height) continue;
    for (let x = 0; x < w; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= width) continue;
      for (let ch = 0; ch < channels; ch++) out[(y * w + x) * channels + ch] = data[(sy * width + sx) * channels + ch];
    }
  }
  return { data: out, width: w, height: h, channels };
}

/** Per-channel float32 gain and offset, value = pixel * gain + offset (quantization folded in). */
function coefficientsFor(meta, channels) {
  const pre = meta.preprocess, q = meta.input.dtype !== "float32" ? meta.input.quantization : null;
  const gain = [], offset = [];
  for (let ch = 0; ch < channels; ch++) {
    const mean = pre.mean.length === 1 ? pre.mean[0] : pre.mean[ch];
    const std = pre.std.length === 1 ? pre.std[0] : pre.std[ch];
    let g = 1 / (255 * std), o = -mean / std;
    if (q) { g /= q.scale; o = o / q.scale + q.zero_point; }
    gain.push(Math.fround(g));
    offset.push(Math.fround(o));
  }
  return [gain, offset];
}

const INT_RANGES = { uint8: [0, 255, Uint8Array], int8: [-128, 127, Int8Array] };

/** Steps 4-6 on the model-sized image: the input tensor (Float32Array, Uint8Array or Int8Array). */
export function toTensor(img, meta) {
  const { data, width, height, channels } = img;
  const [gain, offset] = coefficientsFor(meta, channels);
  const nhwc = meta.input.layout === "NHWC";
  const n = width * height;
  const out = new Float32Array(n * channels);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < channels; ch++) {
      const v = Math.fround(Math.fround(data[i * channels + ch] * gain[ch]) + offset[ch]);
      out[nhwc ? i * channels + ch : ch * n + i] = v;
    }
  }
  const range = INT_RANGES[meta.input.dtype];
  if (!range) return out;
  const [low, high, Kind] = range;
  return Kind.from(out, (v) => Math.min(high, Math.max(low, roundHalfEven(v))));
}

/** The whole of slidelite.preprocess.preprocess on RGBA pixels: {image: model-sized image, tensor}. */
export function preprocess(rgba, width, height, meta) {
  const image = resizeAndCrop(rgba, width, height, meta);
  return { image, tensor: toTensor(image, meta) };
}
