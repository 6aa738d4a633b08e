"""Coverage-guided fuzzing with atheris (libFuzzer for Python) of the targets of ``benchmarks/fuzz_long.py``.

    pip install atheris        # optional tool, not a slidelite dependency (a manylinux wheel exists for x86_64)
    setsid nice -n 10 .venv/bin/python benchmarks/fuzz_atheris.py TARGET [libFuzzer flags, e.g. -runs=50000]

TARGET is ``image`` (bytes -> ``prepare_input``; only ``SlideliteError`` may escape), ``metadata`` (bytes ->
``parse_metadata``; only ``MetadataError``), ``onnx`` (bytes -> the protobuf reader; only ``ProtobufError``),
``tflite`` (bytes -> the flatbuffer reader; only ``FlatbufferError``) or ``model`` (bytes written to a file ->
``open_model_file`` + the ONNX reader / the numpy backend's TFLite loader; only ``ModelError``). The
slidelite modules are instrumented for coverage; the corpus folder (``-corpus_dir=DIR``, default a temp
folder) starts from the real seeds of ``tests/corpus/fuzz_targets.py``. libFuzzer prints its progress
(``cov:``, ``exec/s``) and ``Done N runs``; any other exception is reported as a crash with its input.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["slidelite"]):
    from tests.corpus import fuzz_targets as targets

TARGETS = ("image", "metadata", "onnx", "tflite", "model")


def seeds(target: str, work: Path) -> Dict[str, bytes]:
    """Real inputs the target's corpus starts from."""
    if target == "image":
        return targets.seed_images()
    if target == "metadata":
        return {"document": json.dumps(targets.valid_document()).encode()}
    models = targets.seed_models(work / "seeds")
    if target == "model":
        return models
    return {k: v for k, v in models.items() if k.startswith("tflite" if target == "tflite" else "onnx")}


def harness(target: str, work: Path) -> Callable[[bytes], None]:
    """The one-input function libFuzzer calls."""
    metadata = targets.metadata_variants()[0]
    path = work / "input.bin"

    def model(data: bytes) -> None:
        path.write_bytes(data)
        targets.model_file(path)

    return {
        "image": lambda data: targets.image_to_tensor(data, metadata),
        "metadata": targets.metadata_text,
        "onnx": targets.onnx_buffer,
        "tflite": targets.tflite_buffer,
        "model": model,
    }[target]


def main(argv: List[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    target, flags = argv[1], argv[2:]
    work = Path(tempfile.mkdtemp(prefix=f"slidelite-atheris-{target}-"))
    corpus = next((Path(f.split("=", 1)[1]) for f in flags if f.startswith("-corpus_dir=")), work / "corpus")
    flags = [f for f in flags if not f.startswith("-corpus_dir=")]
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds(target, work).items():
        (corpus / f"seed_{name}").write_bytes(data)
    import warnings

    warnings.filterwarnings("ignore", module=r"PIL\.")
    atheris.Setup([argv[0], *flags, str(corpus)], harness(target, work))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
