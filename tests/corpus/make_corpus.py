"""Write the bad-input corpus: unusual and broken images, model files and checkpoints, and its manifest.

Every file is made here from scikit-image photos, the fixture ONNX classifier and the zoo's
``slide_swin_micro`` (no hand-collected blobs are committed). Each case is one CLI call with the expected
exit code and a fragment of the expected one-line message:

* ``image``: ``slidelite classify --json GOOD BAD GOOD`` -- the bad (or unusual) input between two good
  photos, which must still be classified;
* ``model``: ``slidelite classify --model BAD --json GOOD`` (or ``slidelite info BAD``);
* ``checkpoint``: ``slidelite convert --model slide_swin_micro --checkpoint BAD -o OUT/model.onnx`` --
  nothing may appear in ``OUT``; pickles that would run code create a marker file when loaded naively.

``python tests/corpus/make_corpus.py OUT_DIR [--family image|model|checkpoint ...]`` writes the files and
``OUT_DIR/manifest.json``; ``tests/test_corpus.py`` runs every case.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests._*_fixtures` importable
    sys.path.insert(0, str(ROOT))

from tests._cli_fixtures import SAMPLE, png_header_only, skimage_photo  # noqa: E402
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx, make_tflite_like  # noqa: E402

FAMILIES = ("image", "model", "checkpoint")
CONVERT_FLAGS = ("-q", "--latency-runs", "0")
MARKER = "code_ran"


@dataclass(frozen=True)
class Input:
    """What a case's maker produced: the argument naming the bad input, plus anything the call needs.

    Attributes:
        arg: the path (or pattern / name) passed on the command line.
        env: extra environment variables (a shipped-model registry folder).
        command: a full command replacing the family's default one (``{arg}`` is substituted).
        marker: a file that must not exist after the call (it exists only if pickled code ran).
        named: what the error line must name, when it is not ``arg`` (a shipped model's file).
    """

    arg: str
    env: Dict[str, str] = field(default_factory=dict)
    command: Optional[Tuple[str, ...]] = None
    marker: Optional[str] = None
    named: Optional[str] = None


@dataclass(frozen=True)
class Workspace:
    """Shared inputs of the corpus: good photos, the good fixture model and (lazily) good micro weights."""

    root: Path
    good_photos: Tuple[str, str]
    good_model: Path

    def micro_state_dict(self) -> Dict[str, "object"]:
        """Seeded weights of ``slide_swin_micro`` (a fresh copy of the dict; the tensors are shared)."""
        return dict(_micro_state_dict())


@lru_cache(maxsize=1)
def _micro_state_dict() -> Dict[str, "object"]:
    import torch  # only the checkpoint family needs torch

    from slidelite.zoo import create_model

    torch.manual_seed(0)
    return create_model("slide_swin_micro").state_dict()


Maker = Callable[[Workspace, Path], Input]


@dataclass(frozen=True)
class Spec:
    """One corpus case as declared: how to make the input and what the CLI must answer.

    Attributes:
        id: unique case name.
        family: ``image``, ``model`` or ``checkpoint``.
        make: writes the input into the case's folder and returns it.
        exit_code: the documented exit code (0: the input is unusual but valid).
        fragment: text the one ``error:`` line must contain (None when the call succeeds).
        subprocess: also run it in a real ``python -m slidelite`` process.
        unprivileged: run only in a real process without the capabilities that bypass file permissions.
    """

    id: str
    family: str
    make: Maker
    exit_code: int
    fragment: Optional[str]
    subprocess: bool = False
    unprivileged: bool = False


@dataclass(frozen=True)
class Case:
    """A written corpus case (``manifest.json`` lists them under ``cases``).

    Attributes:
        args: the full ``slidelite`` command line.
        named: the input the error line must name.
        results: for ``classify``, the paths that must get a JSON result line, in order (the good inputs
            of the same call, plus the case's input when it is valid); None for other commands.
        output: a file the call must not create; its folder must stay empty (no temp files).
    """

    id: str
    family: str
    args: Tuple[str, ...]
    exit_code: int
    fragment: Optional[str]
    named: str
    results: Optional[Tuple[str, ...]]
    env: Dict[str, str]
    output: Optional[str]
    marker: Optional[str]
    subprocess: bool
    unprivileged: bool


# ------------------------------------------------------------------------------------------- encoded images


def _encode(image: "object", fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _photo(name: str = "chelsea", size: Optional[Tuple[int, int]] = (120, 80)):
    from PIL import Image

    image = Image.fromarray(skimage_photo(name))
    return image.resize(size) if size else image


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bad_crc() -> bytes:
    data = bytearray(_encode(_photo(), "PNG"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC (8-byte signature + 4 length + 4 type + 13 body)
    return bytes(data)


def _gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only image descriptor claim ``width`` x ``height``; one LZW byte."""
    screen = struct.pack("<6sHHBBB", b"GIF89a", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def _bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header claims ``width`` x ``height`` and that carries 16 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x80" * 16


def _jpeg_header(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    data = bytearray(_encode(_photo(), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _tiff_header(width: int, height: int, samples: int = 1, compression: int = 1, strip_bytes: int = 16) -> bytes:
    """A little-endian TIFF with one IFD claiming ``width`` x ``height`` 8-bit pixels of ``samples`` channels,
    a ``compression`` and a strip of ``strip_bytes`` bytes, of which 16 are there."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, compression), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, samples), (278, 4, 1, height), (279, 4, 1, strip_bytes)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x7f" * 16


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _truncated(fmt: str, suffix: str) -> "Maker":
    """A photo encoded as ``fmt``, cut in half."""
    return _write(f"half.{suffix}", lambda: _half(_encode(_photo(), fmt)))


def _random_bytes(size: int = 4096, seed: int = 6) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _exif_jpeg(orientation: Optional[int], corrupt: bool = False) -> bytes:
    """A JPEG with an EXIF block: a bogus orientation value, or an APP1 'Exif' segment full of garbage."""
    image = _photo()
    if not corrupt:
        exif = image.getexif()
        exif[0x0112] = orientation
        return _encode(image, "JPEG", quality=80, exif=exif.tobytes())
    plain = _encode(image, "JPEG", quality=80)
    garbage = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + _random_bytes(64)
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage + plain[2:]


def _animated(fmt: str) -> bytes:
    from PIL import Image

    frames = [_photo().convert("RGB"), Image.new("RGB", (120, 80), (0, 90, 200))]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _gif_cut_in_second_frame() -> bytes:
    """An animated GIF cut inside its second frame's image descriptor (the first frame is intact)."""
    data = _animated("GIF")
    first = data.index(b"\x21\xf9\x04")
    second = data.index(b"\x21\xf9\x04", first + 1) + 8  # past the 8-byte graphic control extension
    return data[:second + 7]


def _multipage_tiff() -> bytes:
    frames = [_photo("coffee"), _photo("rocket")]
    return _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def _palette_transparency() -> bytes:
    image = _photo().convert("P")
    return _encode(image, "PNG", transparency=0)


def _float_tiff() -> bytes:
    from PIL import Image

    grey = skimage_photo("camera")[:64, :64].astype(np.float32)  # 0..255 floats: not the [0, 1] convention
    return _encode(Image.fromarray(grey, mode="F"), "TIFF")


def _write(name: str, payload: Callable[[], bytes]) -> Maker:
    """A maker that writes ``payload()`` to ``name`` in the case folder."""

    def make(ws: Workspace, folder: Path) -> Input:
        path = folder / name
        path.write_bytes(payload())
        return Input(str(path))

    return make


def _missing(ws: Workspace, folder: Path) -> Input:
    return Input(str(folder / "not_there.jpg"))


def _folder_without_images(ws: Workspace, folder: Path) -> Input:
    (folder / "photos" / "sub").mkdir(parents=True)
    (folder / "photos" / "sub" / "notes.txt").write_text("no images here\n")
    return Input(str(folder / "photos"))


def _empty_folder_named_jpg(ws: Workspace, folder: Path) -> Input:
    (folder / "holiday.jpg").mkdir()
    return Input(str(folder / "holiday.jpg"))


def _fifo(ws: Workspace, folder: Path) -> Input:
    os.mkfifo(folder / "pipe.jpg")
    return Input(str(folder / "pipe.jpg"))


def _dangling_symlink(ws: Workspace, folder: Path) -> Input:
    (folder / "link.jpg").symlink_to(folder / "deleted.jpg")
    return Input(str(folder / "link.jpg"))


def _symlink_loop(ws: Workspace, folder: Path) -> Input:
    (folder / "a.jpg").symlink_to(folder / "b.jpg")
    (folder / "b.jpg").symlink_to(folder / "a.jpg")
    return Input(str(folder / "a.jpg"))


def _unreadable(ws: Workspace, folder: Path) -> Input:
    path = folder / "locked.jpg"
    path.write_bytes(SAMPLE.read_bytes())
    path.chmod(0)
    return Input(str(path))


def _glob_without_matches(ws: Workspace, folder: Path) -> Input:
    return Input(str(folder / "nothing" / "*.jpg"))


def _valid(name: str, payload: Callable[[], bytes]) -> Maker:
    return _write(name, payload)


BOMB = "possible decompression bomb"
NOT_IMAGE = "not an image file"
CORRUPT = "corrupt image header"
NOT_MODEL = "not an ONNX or TFLite model file"

IMAGE_SPECS: List[Spec] = [
    Spec("missing_file", "image", _missing, 1, "no such file or directory", subprocess=True),
    Spec("folder_without_images", "image", _folder_without_images, 1, "no images found in this directory"),
    Spec("empty_folder_named_jpg", "image", _empty_folder_named_jpg, 1, "no images found in this directory"),
    Spec("zero_bytes", "image", _write("zero.jpg", lambda: b""), 1, "zero-byte file"),
    Spec("text_named_jpg", "image", _write("notes.jpg", lambda: b"this is not a picture\n" * 20), 1, NOT_IMAGE),
    Spec("random_bytes_png", "image", _write("noise.png", _random_bytes), 1, NOT_IMAGE),
    Spec("random_bytes_no_extension", "image", _write("noise", lambda: _random_bytes(seed=7)), 1, NOT_IMAGE),
    Spec("truncated_jpeg", "image", _truncated("JPEG", "jpg"), 1, "truncated"),
    Spec("truncated_png", "image", _truncated("PNG", "png"), 1, "truncated"),
    Spec("truncated_gif", "image", _truncated("GIF", "gif"), 1, "truncated"),
    Spec("truncated_webp", "image", _truncated("WEBP", "webp"), 1, CORRUPT),
    Spec("truncated_tiff", "image", _truncated("TIFF", "tif"), 1, "truncated"),
    Spec("truncated_bmp", "image", _truncated("BMP", "bmp"), 1, "truncated"),
    Spec("gif_cut_in_second_frame", "image", _write("cut.gif", _gif_cut_in_second_frame), 1,
         "corrupt animation frame"),
    Spec("jpeg_header_only", "image", _write("head.jpg", lambda: _encode(_photo(), "JPEG")[:300]), 1, CORRUPT),
    Spec("png_bad_header_crc", "image", _write("crc.png", _png_bad_crc), 1, NOT_IMAGE),
    Spec("bomb_png_over_twice_the_limit", "image", _write("bomb.png", lambda: png_header_only(40_000, 40_000)),
         1, BOMB),
    Spec("huge_png_100000x100000", "image",
         _write("huge.png", lambda: png_header_only(100_000, 100_000)), 1, BOMB),
    Spec("bomb_png_over_the_limit", "image", _write("big.png", lambda: png_header_only(10_000, 10_000)),
         1, "image too large (10000x10000 = 100000000 pixels > limit", subprocess=True),
    Spec("huge_gif_header", "image", _write("huge.gif", lambda: _gif_header(65_535, 65_535)), 1, BOMB),
    Spec("huge_bmp_header", "image", _write("huge.bmp", lambda: _bmp_header(60_000, 60_000)), 1, BOMB),
    Spec("huge_jpeg_header", "image", _write("huge.jpg", lambda: _jpeg_header(65_000, 65_000)), 1, BOMB),
    Spec("huge_tiff_header", "image", _write("huge.tif", lambda: _tiff_header(100_000, 100_000)), 1, BOMB),
    Spec("tiff_262_samples_per_pixel", "image", _write("spp.tif", lambda: _tiff_header(4, 4, samples=262)), 1,
         NOT_IMAGE, subprocess=True),
    Spec("tiff_lzw_strip_cut_short", "image",
         _write("lzw.tif", lambda: _tiff_header(32, 36, compression=5, strip_bytes=1152)), 1,
         "Read error on strip 0", subprocess=True),
    Spec("zero_height_png", "image", _write("flat.png", lambda: png_header_only(64, 0)), 1, NOT_IMAGE),
    Spec("zero_height_bmp", "image", _write("flat.bmp", lambda: _bmp_header(64, 0)), 1, NOT_IMAGE),
    Spec("zero_width_gif", "image", _write("thin.gif", lambda: _gif_header(0, 64)), 1, NOT_IMAGE),
    Spec("fifo_named_jpg", "image", _fifo, 1, "not a regular file"),
    Spec("dangling_symlink", "image", _dangling_symlink, 1, "missing file"),
    Spec("symlink_loop", "image", _symlink_loop, 1, "cannot read file"),
    Spec("unreadable_permissions", "image", _unreadable, 1, "permission denied", unprivileged=True),
    Spec("glob_without_matches", "image", _glob_without_matches, 1, "no files match this pattern"),
    Spec("float_tiff_outside_unit_range", "image", _write("float.tif", _float_tiff), 1,
         "float image values must be in [0, 1]"),
    # unusual but valid: classified, exit 0
    Spec("exif_orientation_9", "image", _valid("exif9.jpg", lambda: _exif_jpeg(9)), 0, None),
    Spec("exif_orientation_65535", "image", _valid("exif65535.jpg", lambda: _exif_jpeg(65535)), 0, None),
    Spec("exif_block_garbage", "image", _valid("exif_garbage.jpg", lambda: _exif_jpeg(None, corrupt=True)), 0, None),
    Spec("png_named_jpg", "image", _valid("really_png.jpg", lambda: _encode(_photo(), "PNG")), 0, None),
    Spec("jpeg_named_png", "image", _valid("really_jpeg.png", lambda: _encode(_photo(), "JPEG")), 0, None),
    Spec("jpeg_named_txt", "image", _valid("photo.txt", lambda: _encode(_photo(), "JPEG")), 0, None),
    Spec("webp", "image", _valid("photo.webp", lambda: _encode(_photo(), "WEBP")), 0, None),
    Spec("tiff", "image", _valid("photo.tif", lambda: _encode(_photo(), "TIFF")), 0, None),
    Spec("bmp", "image", _valid("photo.bmp", lambda: _encode(_photo(), "BMP")), 0, None),
    Spec("gif", "image", _valid("photo.gif", lambda: _encode(_photo(), "GIF")), 0, None),
    Spec("la_two_channels", "image", _valid("la.png", lambda: _encode(_photo().convert("LA"), "PNG")), 0, None),
    Spec("grey_16bit_png", "image",
         _valid("i16.png", lambda: _encode(_photo().convert("I;16"), "PNG")), 0, None),
    Spec("cmyk_jpeg", "image", _valid("cmyk.jpg", lambda: _encode(_photo().convert("CMYK"), "JPEG")), 0, None),
    Spec("one_bit_png", "image", _valid("bw.png", lambda: _encode(_photo().convert("1"), "PNG")), 0, None),
    Spec("palette_with_transparency", "image", _valid("pal.png", _palette_transparency), 0, None),
    Spec("one_pixel", "image", _valid("dot.png", lambda: _encode(_photo(size=(1, 1)), "PNG")), 0, None),
    Spec("animated_gif", "image", _valid("anim.gif", lambda: _animated("GIF")), 0, None),
    Spec("animated_webp", "image", _valid("anim.webp", lambda: _animated("WEBP")), 0, None),
    Spec("multipage_tiff", "image", _valid("pages.tif", _multipage_tiff), 0, None),
    Spec("extreme_aspect_ratio", "image",
         _valid("strip.png", lambda: _encode(_photo(size=(100_000, 1)), "PNG")), 0, None),
]


def _flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


def _onnx_offsets(data: bytes) -> Dict[str, int]:
    """Byte positions inside the fixture model: its graph length varint, the first initializer's first dim,
    a byte of that initializer's raw data, and the first byte of the metadata JSON."""
    from slidelite.backends._onnx_reader import LEN, MODEL_GRAPH, iter_fields

    offsets: Dict[str, int] = {"metadata": data.index(b'{"schema"')}
    for number, wire, value in iter_fields(data):
        if number == MODEL_GRAPH and wire == LEN:
            start, end = value  # type: ignore[misc]
            offsets["graph_length"] = start - 1  # the last byte of the length varint
            for gnum, gwire, gvalue in iter_fields(data, start, end):
                if gnum == 5 and gwire == LEN:  # the first initializer (conv_w, dims 8x3x3x3)
                    istart, iend = gvalue  # type: ignore[misc]
                    offsets["dims"] = istart + 1  # field 1 (dims) key, then the first dim's varint
                    offsets["weights"] = iend - 8
                    break
    return offsets


def _damaged_onnx(where: str, mask: int = 0x01) -> Maker:
    def make(ws: Workspace, folder: Path) -> Input:
        data = ws.good_model.read_bytes()
        path = folder / f"flipped_{where}.onnx"
        path.write_bytes(_flip(data, _onnx_offsets(data)[where], mask))
        return Input(str(path))

    return make


def _truncated_model(fraction: float) -> Maker:
    def make(ws: Workspace, folder: Path) -> Input:
        data = ws.good_model.read_bytes()
        path = folder / f"cut_{int(fraction * 100)}.onnx"
        path.write_bytes(data[: int(len(data) * fraction)])
        return Input(str(path))

    return make


def _with_metadata(change: Callable[[dict], object], name: str = "model.onnx", **model: object) -> Maker:
    """A fixture model whose metadata document is ``change(document)`` (a dict, or raw JSON text)."""

    def make(ws: Workspace, folder: Path) -> Input:
        document = change(fixture_metadata())
        path = folder / name
        if isinstance(document, str):
            _onnx_with_raw_metadata(path, document, **model)
        else:
            make_fixture_onnx(path, metadata=document, **model)  # type: ignore[arg-type]
        return Input(str(path))

    return make


def _onnx_with_raw_metadata(path: Path, text: str, **model: object) -> None:
    import onnx

    make_fixture_onnx(path, embed=False, **model)  # type: ignore[arg-type]
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "slidelite.metadata", text
    onnx.save(proto, str(path))


def _set(document: dict, dotted: str, value: object) -> dict:
    node = document
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return document


def _drop(document: dict, dotted: str) -> dict:
    node = document
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    del node[last]
    return document


def _no_metadata(ws: Workspace, folder: Path) -> Input:
    return Input(str(make_fixture_onnx(folder / "bare.onnx", embed=False)))


def _tflite(name: str, keep: Optional[int] = None, metadata: bool = True, prefix: bytes = b"") -> Maker:
    def make(ws: Workspace, folder: Path) -> Input:
        path = make_tflite_like(folder / name, metadata=fixture_metadata() if metadata else None)
        data = prefix + path.read_bytes()[len(prefix):]
        path.write_bytes(data if keep is None else data[:keep])
        return Input(str(path))

    return make


def _registry(damage: str) -> Maker:
    """A shipped-model registry (``SLIDELITE_MODELS_DIR``) holding the fixture model, then damaged."""

    def make(ws: Workspace, folder: Path) -> Input:
        import hashlib

        model = folder / "fixture.onnx"
        model.write_bytes(ws.good_model.read_bytes())
        data = model.read_bytes()
        entry = {"name": "fixture", "file": "fixture.onnx", "format": "onnx", "precision": "fp32",
                 "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "default": True}
        if damage == "wrong_checksum":
            entry["sha256"] = hashlib.sha256(b"another file").hexdigest()
        elif damage == "tampered":  # one weight byte changed after the manifest was written: still a valid model
            model.write_bytes(_flip(data, _onnx_offsets(data)["weights"]))
        elif damage == "missing_file":
            model.unlink()
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps({"manifest_version": 1, "models": [entry]}) if damage != "broken_manifest"
                            else '{"models": [', encoding="utf-8")
        env = {"SLIDELITE_MODELS_DIR": str(folder)}
        named = str(manifest if damage == "broken_manifest" else model)
        if damage == "tampered":  # `slidelite info` shows the sha256 and the mismatch, then fails
            return Input("fixture", env=env, command=("info", "{arg}"), named=named)
        return Input("fixture", env=env, named=named)

    return make


def _model_folder(ws: Workspace, folder: Path) -> Input:
    (folder / "model.onnx").mkdir()
    return Input(str(folder / "model.onnx"))


def _external_data(ws: Workspace, folder: Path) -> Input:
    """An initializer stored as external data outside the model's folder (a path-traversal attempt)."""
    import onnx

    path = folder / "external.onnx"
    proto = onnx.load(str(ws.good_model))
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../../../../../etc/passwd"), ("offset", "0"), ("length", "864")):
        item = tensor.external_data.add()
        item.key, item.value = key, value
    onnx.save(proto, str(path))
    return Input(str(path))


def _onnx_without_inputs(ws: Workspace, folder: Path) -> Input:
    """A valid ONNX graph with no input at all: its output is a constant."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scores = numpy_helper.from_array(np.linspace(-1, 1, 10, dtype=np.float32).reshape(1, 10), "value")
    graph = helper.make_graph([helper.make_node("Constant", [], ["scores"], value=scores)], "constant", [],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    helper.set_model_props(proto, {"slidelite.metadata": json.dumps(fixture_metadata())})
    path = folder / "constant.onnx"
    onnx.save(proto, str(path))
    return Input(str(path))


def _tflite_empty_subgraph(ws: Workspace, folder: Path) -> Input:
    from tests.corpus.tflite_model import make_tflite_classifier

    return Input(str(make_tflite_classifier(folder / "hollow.tflite", subgraph=False)))


def _tflite_on_numpy(kind: str) -> Maker:
    """A TFLite classifier classified with ``--backend numpy`` (the pure-Python reader and kernels): an op it does
    not implement, a graph reading a tensor before writing it, or a hostile flatbuffer edit (DAMAGES)."""

    def make(ws: Workspace, folder: Path) -> Input:
        from tests.corpus import tflite_model

        path = folder / f"{kind}.tflite"
        if kind == "unsupported_op":
            tflite_model.unsupported_op_classifier(path)
        elif kind == "cycle":
            tflite_model.cyclic_classifier(path)
        else:
            good = tflite_model.make_tflite_classifier(folder / "good.tflite").read_bytes()
            path.write_bytes(tflite_model.damage_tflite(good, kind))
        return Input(str(path), command=("classify", "--backend", "numpy", "--model", "{arg}", "--json",
                                         ws.good_photos[0]))

    return make


HUGE_LABELS = 100_001

MODEL_SPECS: List[Spec] = [
    Spec("text_named_onnx", "model", _write("notes.onnx", lambda: b"not a model\n" * 40), 1,
         NOT_MODEL),
    Spec("png_named_onnx", "model", _write("photo.onnx", lambda: _encode(_photo(), "PNG")), 1,
         NOT_MODEL),
    Spec("random_bytes_tflite", "model", _write("noise.tflite", _random_bytes), 1, NOT_MODEL),
    Spec("zero_byte_model", "model", _write("empty.onnx", lambda: b""), 1, "zero-byte file"),
    Spec("model_is_a_folder", "model", _model_folder, 1, "not a model file"),
    Spec("model_missing", "model", _missing, 1, "model file not found"),
    Spec("truncated_onnx_10", "model", _truncated_model(0.10), 1, "truncated", subprocess=True),
    Spec("truncated_onnx_50", "model", _truncated_model(0.50), 1, "truncated"),
    Spec("truncated_onnx_99", "model", _truncated_model(0.99), 1, "truncated"),
    Spec("bitflip_graph_length", "model", _damaged_onnx("graph_length", 0x40), 1, "truncated ONNX model file"),
    Spec("bitflip_initializer_dims", "model", _damaged_onnx("dims"), 1, "onnxruntime cannot load the model"),
    Spec("bitflip_metadata_json", "model", _damaged_onnx("metadata"), 1, "slidelite metadata is not valid JSON"),
    Spec("bitflip_metadata_utf8", "model", _damaged_onnx("metadata", 0x80), 1, NOT_MODEL),
    Spec("bitflip_weight_still_valid", "model", _damaged_onnx("weights"), 0, None),
    Spec("wrong_magic_tflite", "model", _tflite("magic.tflite", prefix=b"\x1c\0\0\0TFL2"), 1, NOT_MODEL),
    Spec("truncated_tflite", "model", _tflite("cut.tflite", keep=100), 1, "truncated TFLite model file"),
    Spec("tflite_without_subgraphs", "model", _tflite("empty_graph.tflite"), 1, "has no subgraph to run",
         subprocess=True),
    Spec("tflite_empty_subgraph", "model", _tflite_empty_subgraph, 1, "has no input or no output tensor"),
    Spec("onnx_without_inputs", "model", _onnx_without_inputs, 1, "has no input or no output tensor"),
    Spec("tflite_numpy_unsupported_op", "model", _tflite_on_numpy("unsupported_op"), 1,
         "uses TFLite op CUMSUM (operator 1), which the numpy backend does not implement", subprocess=True),
    Spec("tflite_numpy_cycle", "model", _tflite_on_numpy("cycle"), 1, "before anything writes it"),
    Spec("tflite_numpy_offset_past_end", "model", _tflite_on_numpy("offset_past_end"), 1, "broken TFLite model file"),
    Spec("tflite_numpy_offset_wraps", "model", _tflite_on_numpy("offset_wraps"), 1, "broken TFLite model file"),
    Spec("tflite_numpy_billion_tensors", "model", _tflite_on_numpy("billion_tensors"), 1, "broken TFLite model file",
         subprocess=True),
    Spec("external_data_outside_folder", "model", _external_data, 1, "External data path escapes model directory"),
    Spec("no_metadata", "model", _no_metadata, 1, "has no slidelite metadata"),
    Spec("metadata_not_json", "model", _with_metadata(lambda d: json.dumps(d)[:-7]), 1, "is not valid JSON"),
    Spec("metadata_not_an_object", "model", _with_metadata(lambda d: "[1, 2, 3]"), 1, "must be a JSON object"),
    Spec("metadata_other_schema", "model", _with_metadata(lambda d: _set(d, "schema", "tflite.metadata")), 1,
         "is not a slidelite.metadata document"),
    Spec("metadata_schema_version_99", "model", _with_metadata(lambda d: _set(d, "schema_version", 99)), 1,
         "metadata schema version 99 is not supported"),
    Spec("metadata_missing_labels", "model", _with_metadata(lambda d: _drop(d, "labels")), 1,
         "missing the field 'labels'"),
    Spec("metadata_missing_input", "model", _with_metadata(lambda d: _drop(d, "input")), 1,
         "missing the field 'input'"),
    Spec("metadata_missing_input_height", "model", _with_metadata(lambda d: _drop(d, "input.height")), 1,
         "missing the field 'input.height'"),
    Spec("metadata_labels_is_a_string", "model", _with_metadata(lambda d: _set(d, "labels", "cat,dog")), 1,
         "'labels' must be a non-empty list of strings"),
    Spec("metadata_height_is_a_string", "model", _with_metadata(lambda d: _set(d, "input.height", "32")), 1,
         "'input.height' must be an integer"),
    Spec("metadata_mean_is_a_string", "model", _with_metadata(lambda d: _set(d, "preprocess.mean", "0.5")), 1,
         "'preprocess.mean' must be a non-empty list of numbers"),
    Spec("metadata_std_zero", "model", _with_metadata(lambda d: _set(d, "preprocess.std", [0, 1, 1])), 1,
         "'preprocess.std' must hold positive numbers"),
    Spec("metadata_crop_pct_huge_integer", "model",
         _with_metadata(lambda d: _set(d, "preprocess.crop_pct", 10 ** 400)), 1, "'preprocess.crop_pct'"),
    Spec("metadata_mean_huge_integer", "model",
         _with_metadata(lambda d: _set(d, "preprocess.mean", [10 ** 400, 0, 0])), 1, "'preprocess.mean'"),
    Spec("metadata_unknown_interpolation", "model",
         _with_metadata(lambda d: _set(d, "preprocess.interpolation", "magic")), 1,
         "'preprocess.interpolation' is 'magic'"),
    Spec("metadata_huge_label_list", "model",
         _with_metadata(lambda d: _set(d, "labels", [f"c{i}" for i in range(HUGE_LABELS)])), 1,
         f"'labels' has {HUGE_LABELS} entries"),
    Spec("metadata_label_count_mismatch", "model",
         _with_metadata(lambda d: _set(d, "labels", [f"c{i}" for i in range(100_000)])), 1,
         "metadata has 100000 labels but the model output has 10 classes"),
    Spec("metadata_input_size_mismatch", "model", _with_metadata(lambda d: _set(d, "input.height", 64)), 1,
         "does not match the model input shape"),
    Spec("metadata_dtype_mismatch", "model", _with_metadata(
        lambda d: _set(_set(d, "input.dtype", "uint8"), "input.quantization", {"scale": 0.02, "zero_point": 128})),
        1, "metadata input dtype uint8 does not match the model's float32"),
    Spec("metadata_oversized", "model",
         _with_metadata(lambda d: _set(d, "description", "x" * (16 * 1024 * 1024 + 1))), 1, "larger than"),
    Spec("shipped_wrong_checksum", "model", _registry("wrong_checksum"), 1, "sha256 mismatch", subprocess=True),
    Spec("shipped_tampered_info", "model", _registry("tampered"), 1, "sha256 mismatch"),
    Spec("shipped_file_missing", "model", _registry("missing_file"), 1, "shipped model file is missing"),
    Spec("shipped_manifest_broken", "model", _registry("broken_manifest"), 1, "unreadable model manifest"),
]


# ------------------------------------------------------------------------------------------- checkpoints


class RunsCode:
    """Pickles as a call to ``os.system``: loading it with plain ``pickle`` would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalsCode:
    """Pickles as ``builtins.eval`` of an expression that writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_save(name: str, build: Callable[[Workspace, Path], object], marker: bool = False) -> Maker:
    def make(ws: Workspace, folder: Path) -> Input:
        import torch

        path = folder / name
        torch.save(build(ws, folder), path)
        return Input(str(path), marker=str(folder / MARKER) if marker else None)

    return make


def _wrong_shapes(ws: Workspace, folder: Path) -> object:
    """A head whose weight and bias disagree (5 vs 7 classes): no model has it (a consistent 5-class head is a
    fine-tuned model, and converts)."""
    import torch

    state = ws.micro_state_dict()
    state["head.weight"] = torch.zeros(5, state["head.weight"].shape[1])
    state["head.bias"] = torch.zeros(7)
    return state


def _non_tensor(ws: Workspace, folder: Path) -> object:
    state = ws.micro_state_dict()
    state["head.bias"] = [0.0] * 10
    return {"model": state}


def _other_architecture(ws: Workspace, folder: Path) -> object:
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 10)).state_dict()


def _raw_bytes_ckpt(name: str, payload: Callable[[Workspace], bytes]) -> Maker:
    def make(ws: Workspace, folder: Path) -> Input:
        path = folder / name
        path.write_bytes(payload(ws))
        return Input(str(path))

    return make


def _good_ckpt_bytes(ws: Workspace) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(ws.micro_state_dict(), buffer)
    return buffer.getvalue()


def _plain_pickle_with_code(ws: Workspace, folder: Path) -> Input:
    """Not a torch zip file at all: a protocol-2 pickle whose first object runs ``os.system``."""
    import pickle

    path = folder / "legacy.pth"
    path.write_bytes(pickle.dumps(RunsCode(folder / MARKER), protocol=2))
    return Input(str(path), marker=str(folder / MARKER))


def _no_model_option(build: Callable[[Workspace, Path], object], name: str) -> Maker:
    inner = _torch_save(name, build)

    def make(ws: Workspace, folder: Path) -> Input:
        made = inner(ws, folder)
        return Input(made.arg, command=("convert", "--checkpoint", "{arg}"))

    return make


REFUSED = "refused to unpickle"
UNREADABLE = "not a readable PyTorch checkpoint"

CHECKPOINT_SPECS: List[Spec] = [
    Spec("ckpt_other_architecture", "checkpoint", _torch_save("other.pth", _other_architecture), 1,
         "does not fit SlideSwinTransformer"),
    Spec("ckpt_wrong_shapes", "checkpoint", _torch_save("shapes.pth", _wrong_shapes), 1, "shape mismatch"),
    Spec("ckpt_non_tensor_value", "checkpoint", _torch_save("values.pth", _non_tensor), 1,
         "'head.bias' is a list, not a tensor"),
    Spec("ckpt_pickle_runs_os_system", "checkpoint", _torch_save(
        "evil.pth", lambda ws, f: {"model": ws.micro_state_dict(), "hook": RunsCode(f / MARKER)}, marker=True),
        1, REFUSED, subprocess=True),
    Spec("ckpt_pickle_runs_eval", "checkpoint", _torch_save(
        "eval.pth", lambda ws, f: EvalsCode(f / MARKER), marker=True), 1, REFUSED),
    Spec("ckpt_plain_pickle_with_code", "checkpoint", _plain_pickle_with_code, 1, REFUSED),
    Spec("ckpt_numpy_array", "checkpoint", _torch_save(
        "numpy.pth", lambda ws, f: {"model": {"head.bias": np.zeros(10, np.float32)}}), 1, REFUSED),
    Spec("ckpt_text_file", "checkpoint", _raw_bytes_ckpt("notes.pth", lambda ws: b"weights go here\n" * 30), 1,
         UNREADABLE),
    Spec("ckpt_truncated", "checkpoint", _raw_bytes_ckpt("cut.pth", lambda ws: _half(_good_ckpt_bytes(ws))), 1,
         UNREADABLE),
    Spec("ckpt_zero_bytes", "checkpoint", _raw_bytes_ckpt("empty.pth", lambda ws: b""), 1, UNREADABLE),
    Spec("ckpt_missing", "checkpoint", _missing, 1, "no such checkpoint file"),
    Spec("ckpt_a_list", "checkpoint", _torch_save("list.pth", lambda ws, f: [1, 2, 3]), 1,
         "holds a list, not a state_dict"),
    Spec("ckpt_empty_state_dict", "checkpoint", _torch_save("empty_sd.pth", lambda ws, f: {"model": {}}), 1,
         "the state_dict is empty"),
    Spec("ckpt_no_weights", "checkpoint", _torch_save("epoch.pth", lambda ws, f: {"epoch": 3, "lr": 0.1}), 1,
         "no weights found"),
    Spec("ckpt_unknown_architecture_without_model", "checkpoint",
         _no_model_option(_other_architecture, "unknown.pth"), 1, "cannot tell the architecture"),
]

SPECS: List[Spec] = IMAGE_SPECS + MODEL_SPECS + CHECKPOINT_SPECS


# ------------------------------------------------------------------------------------------- writing


def workspace(root: Path) -> Workspace:
    """Write the shared good inputs (two photos, the fixture model) under ``root``."""
    good = root / "good"
    good.mkdir(parents=True, exist_ok=True)
    photo = good / "chelsea.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    second = good / "coffee.png"
    second.write_bytes(_encode(_photo("coffee", size=None), "PNG"))
    model = make_fixture_onnx(good / "model.onnx")
    return Workspace(root=root, good_photos=(str(photo), str(second)), good_model=model)


def build_case(spec: Spec, ws: Workspace) -> Case:
    """Make the input of ``spec`` in its own folder and return the full CLI call with its expectations."""
    folder = ws.root / spec.family / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    made = spec.make(ws, folder)
    output, results, valid = None, None, spec.exit_code == 0
    if spec.family == "image":
        first, last = ws.good_photos
        args = ("classify", "--model", str(ws.good_model), "--json", first, made.arg, last)
        results = (first, made.arg, last) if valid else (first, last)
    elif spec.family == "model":
        args = ("classify", "--model", made.arg, "--json", ws.good_photos[0])
        results = (ws.good_photos[0],) if valid else ()
    else:
        (folder / "out").mkdir()
        output = str(folder / "out" / "model.onnx")
        args = ("convert", "--model", "slide_swin_micro", "--checkpoint", made.arg, "-o", output, *CONVERT_FLAGS)
    if made.command is not None:
        args = tuple(part.replace("{arg}", made.arg) for part in made.command)
        if spec.family == "checkpoint":
            args += ("-o", str(output), *CONVERT_FLAGS)
        else:
            results = None
    return Case(id=spec.id, family=spec.family, args=args, exit_code=spec.exit_code, fragment=spec.fragment,
                named=made.named or made.arg, results=results, env=made.env, output=output, marker=made.marker,
                subprocess=spec.subprocess, unprivileged=spec.unprivileged)


def write_corpus(root: Path, families: Iterable[str] = FAMILIES) -> Dict[str, Case]:
    """Write the cases of ``families`` under ``root`` and ``root/manifest.json``; returns id -> case."""
    root = Path(root)
    ws = workspace(root)
    wanted = set(families)
    cases = {spec.id: build_case(spec, ws) for spec in SPECS if spec.family in wanted}
    manifest = {"cases": [asdict(case) for case in cases.values()]}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return cases


def spec_ids(families: Sequence[str] = FAMILIES) -> List[str]:
    """Ids of the declared cases of ``families``, in declaration order (no file is written)."""
    return [spec.id for spec in SPECS if spec.family in families]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write the corpus into a folder and print one line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="only these families (repeatable)")
    options = parser.parse_args(argv)
    cases = write_corpus(options.out, options.family or FAMILIES)
    for case in cases.values():
        print(f"{case.family:<10} {case.id:<40} exit {case.exit_code}  {case.fragment or ''}")
    print(f"{len(cases)} cases; manifest: {options.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
