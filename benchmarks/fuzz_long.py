"""Long fuzzing run: a seeded random-mutation loop over the targets of ``tests/test_fuzz.py``.

    setsid nice -n 10 .venv/bin/python benchmarks/fuzz_long.py [--executions 100000] [--seed 0] [--hang-s 60]

The targets and seeds are ``tests/corpus/fuzz_targets.py``'s (real photos in every format, the fixture ONNX
and TFLite classifiers, a valid metadata document); executions go round-robin over:

* ``image_random``: random bytes; ``image_mutated``: mutated PNG/JPEG/GIF/WebP/BMP/TIFF files;
  ``image_array``: random arrays of any dtype and shape; ``image_pil``: random PIL images of any mode and
  size -- through ``prepare_input``, where only ``SlideliteError`` may escape;
* ``metadata_value``: random JSON values; ``metadata_mutated``: mutations of a valid document;
  ``metadata_text``: mutated JSON text -- only ``MetadataError``;
* ``onnx_buffer``: mutated ONNX files through the protobuf reader -- only ``ProtobufError``;
  ``tflite_buffer``: mutated TFLite files through the flatbuffer reader -- only ``FlatbufferError``;
  ``model_file``: mutated ONNX/TFLite files through ``open_model_file``, the ONNX reader and the numpy
  backend's TFLite loader (plus one run) -- only
  ``ModelError``.

Printed: per target the executions, distinct inputs ("cases tried"), accepted / refused counts, failures
(any other exception) and the slowest execution; then the totals. A watchdog dumps every thread's stack
and exits 3 when one execution runs longer than ``--hang-s`` (a hang). Failing inputs are saved under
``--save-failures`` (default: a temp folder) for reproduction. Exit code 1 when anything failed.
"""
from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.corpus import fuzz_targets as targets  # noqa: E402

EXIT_HANG = 3


def random_json(rnd: random.Random, depth: int = 0) -> Any:
    """A random JSON-like value: scalars (huge integers, NaN/inf, odd strings), nested lists and objects."""
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.random() < 0.5
    if kind == 2:
        return rnd.choice([0, 1, -1, 3, 32, 255, 256, 2 ** 31, 2 ** 63, 10 ** 400, -(10 ** 400),
                           rnd.randint(-999, 999)])
    if kind == 3:
        return rnd.choice([0.0, -0.0, 0.5, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), rnd.random()])
    if kind in (4, 5):
        return rnd.choice(["", "RGB", "L", "NCHW", "NHWC", "uint8", "float32", "bicubic", "logits",
                           "slidelite.metadata", "\x00", "\ud7ff", "é" * rnd.randint(0, 5), rnd.randbytes(6).hex()])
    if kind in (6, 7):
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(["schema", "labels", "input", "height", "mean", "x", ""]) + str(rnd.randrange(3)):
            random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def random_array(rnd: random.Random) -> np.ndarray:
    shape = tuple(rnd.choice([0, 1, 2, 3, 4, 5, 17, 40]) for _ in range(rnd.randint(0, 4)))
    dtype = np.dtype(rnd.choice(targets.DTYPES))
    raw = rnd.randbytes(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def random_pil(rnd: random.Random) -> Any:
    from PIL import Image

    image = Image.new(rnd.choice(targets.PIL_MODES), (rnd.randint(0, 48), rnd.randint(0, 48)))
    size = len(image.tobytes())
    if size:
        image.frombytes(rnd.randbytes(size))
    return image


class Targets:
    """Input generators and the target each feeds, by name."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.images = targets.seed_images()
        self.models = targets.seed_models(work / "seeds")
        self.metadata = targets.metadata_variants()
        self.document_text = json.dumps(targets.valid_document()).encode()

    def generators(self) -> Dict[str, Callable[[random.Random], Tuple[Any, Callable[[Any], bool]]]]:
        """name -> function(rnd) returning (input, target call)."""
        def image(source: Any, rnd: random.Random) -> Tuple[Any, Callable[[Any], bool]]:
            metadata = rnd.choice(self.metadata)
            return source, lambda value: targets.image_to_tensor(value, metadata)

        def model_file(rnd: random.Random) -> Tuple[Any, Callable[[Any], bool]]:
            name = rnd.choice(sorted(self.models))
            path = self.work / f"fuzzed.{'tflite' if name.startswith('tflite') else 'onnx'}"

            def run(data: bytes) -> bool:
                path.write_bytes(data)
                return targets.model_file(path)

            return targets.mutate(self.models[name], rnd), run

        return {
            "image_random": lambda rnd: image(rnd.randbytes(rnd.randint(0, 2048)), rnd),
            "image_mutated": lambda rnd: image(targets.mutate(self.images[rnd.choice(sorted(self.images))], rnd), rnd),
            "image_array": lambda rnd: image(random_array(rnd), rnd),
            "image_pil": lambda rnd: image(random_pil(rnd), rnd),
            "metadata_value": lambda rnd: (random_json(rnd), targets.metadata_document),
            "metadata_mutated": lambda rnd: (self._mutated_document(rnd), targets.metadata_document),
            "metadata_text": lambda rnd: (targets.mutate(self.document_text, rnd), targets.metadata_text),
            "onnx_buffer": lambda rnd: (targets.mutate(self.models[rnd.choice(["onnx0", "onnx1", "onnx2"])], rnd),
                                        targets.onnx_buffer),
            "tflite_buffer": lambda rnd: (targets.mutate(self.models[rnd.choice(["tflite", "tflite_q"])], rnd),
                                          targets.tflite_buffer),
            "model_file": model_file,
        }

    def _mutated_document(self, rnd: random.Random) -> Any:
        document = targets.valid_document()
        values = [random_json(rnd) for _ in range(3)]
        for _ in range(rnd.randint(1, 4)):
            document = targets.mutate_document(document, rnd, values)
        return document


def fingerprint(value: Any) -> bytes:
    """A digest identifying an input (distinct inputs = cases tried)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, np.ndarray):
        raw = f"{value.dtype.str}{value.shape}".encode() + value.tobytes()
    elif hasattr(value, "tobytes") and hasattr(value, "mode"):
        raw = f"{value.mode}{value.size}".encode() + value.tobytes()
    else:
        raw = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.blake2b(raw, digest_size=12).digest()


def save_failure(folder: Path, name: str, index: int, value: Any, error: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{name}-{index}"
    if isinstance(value, (bytes, bytearray)):
        stem.with_suffix(".bin").write_bytes(bytes(value))
    elif isinstance(value, np.ndarray):
        np.save(stem.with_suffix(".npy"), value, allow_pickle=False)
    elif hasattr(value, "mode"):
        value.save(stem.with_suffix(".tiff"))
    else:
        stem.with_suffix(".json").write_text(json.dumps(value, default=str))
    stem.with_suffix(".txt").write_text(error)


class Watchdog(threading.Thread):
    """Exits the process (after dumping all stacks) when no execution finished for ``limit_s`` seconds."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.limit_s = limit_s
        self.last = time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(1.0)
            if time.monotonic() - self.last > self.limit_s:
                print(f"HANG: one execution ran longer than {self.limit_s:g} s", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(EXIT_HANG)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000, help="total executions (all targets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=60.0, help="an execution longer than this is a hang")
    parser.add_argument("--save-failures", type=Path, default=None, help="folder for failing inputs")
    options = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore", module=r"PIL\.")  # Pillow's notes on damaged files are not findings
    rnd = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="slidelite-fuzz-") as work:
        failures_dir = options.save_failures or Path(work) / "failures"
        generators = Targets(Path(work)).generators()
        stats: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
        seen: Dict[str, set] = defaultdict(set)
        watchdog = Watchdog(options.hang_s)
        watchdog.start()
        names = list(generators)
        started = time.perf_counter()
        for index in range(options.executions):
            name = names[index % len(names)]
            value, target = generators[name](rnd)
            seen[name].add(fingerprint(value))
            begin = time.perf_counter()
            try:
                outcome = "accepted" if target(value) else "refused"
            except Exception:  # noqa: BLE001 - any other exception is exactly what the run looks for
                outcome = "failures"
                save_failure(failures_dir, name, index, value, traceback.format_exc())
            elapsed = time.perf_counter() - begin
            watchdog.last = time.monotonic()
            entry = stats[name]
            entry["executions"] += 1
            entry[outcome] += 1
            entry["slowest_s"] = max(entry["slowest_s"], elapsed)
            if (index + 1) % 10_000 == 0:
                print(f"  {index + 1} executions, {time.perf_counter() - started:.0f} s", flush=True)
        wall = time.perf_counter() - started
        print(f"{'target':<18}{'executions':>11}{'cases':>9}{'accepted':>10}{'refused':>9}{'failures':>10}"
              f"{'slowest ms':>12}")
        for name in names:
            e = stats[name]
            print(f"{name:<18}{int(e['executions']):>11}{len(seen[name]):>9}{int(e['accepted']):>10}"
                  f"{int(e['refused']):>9}{int(e['failures']):>10}{e['slowest_s'] * 1000:>12.1f}")
        total_failures = int(sum(e["failures"] for e in stats.values()))
        cases = sum(len(s) for s in seen.values())
        print(f"cases tried: {cases}, executions: {options.executions}, failures: {total_failures} "
              f"(seed {options.seed}, {wall:.0f} s, {options.executions / wall:.0f} exec/s)")
        if total_failures:
            print(f"failing inputs saved in {failures_dir}")
            if options.save_failures is None:
                import shutil

                kept = Path(tempfile.mkdtemp(prefix="slidelite-fuzz-failures-"))
                shutil.copytree(failures_dir, kept, dirs_exist_ok=True)
                print(f"(copied to {kept})")
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
