"""Resource limits and trust boundaries of the runtime.

* a maximum image pixel count: ``slidelite classify --max-pixels N`` (``ClassifierOptions.max_image_pixels``;
  the default is Pillow's decompression-bomb guard, exercised by the corpus);
* bounded memory: classifying a folder of 10,000 photos peaks at about the same RSS as 100 photos (the
  inputs are streamed, never collected), and an image of extreme aspect ratio is not blown up to gigabytes
  before the centre crop; peak RSS is measured for real ``python -m slidelite`` processes with
  ``resource.getrusage(RUSAGE_CHILDREN)`` in a wrapper process, so nothing else pollutes it;
* nothing the runtime loads is executed: no pickle (or marshal/shelve/eval/exec) anywhere in ``slidelite/``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from slidelite import preprocess
from slidelite.metadata import metadata_from_dict
from tests._cli_fixtures import ROOT, SAMPLE, run_cli, skimage_photo
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx

MIB = 1024  # ru_maxrss is in KiB on Linux
#: RSS a 10,000-file run may add over a 100-file run (decoding all 10,000 64x64 photos would hold ~120 MiB)
STREAMING_GROWTH_KIB = 32 * MIB
#: RSS the 1 x 100000 strip may add over a normal photo (resizing it whole would allocate ~500 MiB)
STRIP_GROWTH_KIB = 64 * MIB

PEAK_RSS = textwrap.dedent("""
    import json, resource, subprocess, sys
    run = subprocess.run([sys.executable, "-m", "slidelite", *sys.argv[1:]], capture_output=True)
    print(json.dumps({"rc": run.returncode, "results": run.stdout.count(b"\\n"),
                      "stderr": run.stderr.decode(errors="replace")[-2000:],
                      "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""")


def peak_rss(*args: object) -> Dict[str, object]:
    """Run ``python -m slidelite ARGS`` under a wrapper; its exit code, result lines, stderr and peak RSS (KiB)."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_fixture_onnx(tmp_path_factory.mktemp("limits") / "model.onnx")


# ------------------------------------------------------------------------------------------- pixel limit


def test_max_pixels_option_refuses_larger_images_only(model: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(skimage_photo("coffee")).resize((30, 20)).save(small)
    run = run_cli(["classify", "--model", model, "--max-pixels", 1000, "--json", SAMPLE, small])
    assert run.exit_code == 1
    assert [json.loads(line)["path"] for line in run.stdout.splitlines()] == [str(small)]
    assert run.error_lines == [f"error: {SAMPLE}: image too large (451x300 = 135300 pixels > limit 1000), "
                               "possible decompression bomb"]


def test_max_pixels_must_be_positive(model: Path) -> None:
    run = run_cli(["classify", "--model", model, "--max-pixels", 0, SAMPLE])
    assert run.exit_code == 2 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith("error: ") and "--max-pixels" in line


# ------------------------------------------------------------------------------------------- memory


@pytest.mark.slow
def test_classifying_10000_files_streams(model: Path, tmp_path: Path) -> None:
    photo = Image.fromarray(skimage_photo("chelsea")).resize((64, 64))
    encoded = tmp_path / "encoded.jpg"
    photo.save(encoded, quality=85)
    data = encoded.read_bytes()
    for count in (100, 10_000):
        folder = tmp_path / f"photos{count}"
        folder.mkdir()
        for i in range(count):
            (folder / f"img{i:05d}.jpg").write_bytes(data)
    small = peak_rss("classify", "--model", model, "--json", tmp_path / "photos100")
    large = peak_rss("classify", "--model", model, "--json", tmp_path / "photos10000")
    assert (small["rc"], small["results"]) == (0, 100), small["stderr"]
    assert (large["rc"], large["results"]) == (0, 10_000), large["stderr"]
    growth = large["peak_kib"] - small["peak_kib"]
    assert growth < STREAMING_GROWTH_KIB, f"peak RSS {small['peak_kib']} KiB -> {large['peak_kib']} KiB"


def test_extreme_aspect_ratio_is_not_resized_whole(model: Path, tmp_path: Path) -> None:
    strip = tmp_path / "strip.png"
    Image.fromarray(skimage_photo("rocket")).resize((100_000, 1)).save(strip)
    normal = peak_rss("classify", "--model", model, SAMPLE)
    extreme = peak_rss("classify", "--model", model, strip)
    assert (normal["rc"], extreme["rc"]) == (0, 0), extreme["stderr"]
    assert extreme["peak_kib"] - normal["peak_kib"] < STRIP_GROWTH_KIB, (normal["peak_kib"], extreme["peak_kib"])


def test_crop_region_resize_matches_the_full_resize(monkeypatch) -> None:
    """The bounded path (used above ``MAX_RESIZED_PIXELS``) gives the same crop as resizing the whole image,
    up to rounding: checked on a photo where both paths are cheap."""
    metadata = metadata_from_dict(fixture_metadata(size=64))
    photo = Image.fromarray(skimage_photo("astronaut")).resize((600, 200))
    full = np.asarray(preprocess.resize_and_crop(photo, metadata), dtype=np.int16)
    monkeypatch.setattr(preprocess, "MAX_RESIZED_PIXELS", 0)
    cropped = np.asarray(preprocess.resize_and_crop(photo, metadata), dtype=np.int16)
    assert cropped.shape == full.shape == (64, 64, 3)
    assert np.abs(cropped - full).mean() < 1.0 and np.abs(cropped - full).max() <= 8


# ------------------------------------------------------------------------------------------- trust

UNSAFE = re.compile(
    r"^\s*(?:import|from)\s+(?:pickle|cPickle|_pickle|marshal|shelve|dill|cloudpickle|joblib)\b"
    r"|\b(?:torch|np|numpy)\.load\s*\(|allow_pickle|\bpickle\.|(?<![\w.])(?:eval|exec)\s*\(",
    re.MULTILINE,
)


def test_the_pattern_finds_unsafe_loading() -> None:
    for line in ["import pickle", "from marshal import loads", "x = torch.load(p)", "a = np.load(f, allow_pickle=True)",
                 "cfg = eval(text)", "exec(code)", "    import dill"]:
        assert UNSAFE.search(line), line
    for line in ["evaluate(x)", "model.eval()", "self.exec_mode = 1", "# a pickle-free format", "np.loads_text"]:
        assert not UNSAFE.search(line), line


def test_the_runtime_never_unpickles_or_executes_what_it_loads() -> None:
    found = [f"{path.relative_to(ROOT)}:{source[:match.start()].count(chr(10)) + 1}: {match.group().strip()}"
             for path in sorted((ROOT / "slidelite").rglob("*.py"))
             for source in [path.read_text(encoding="utf-8")]
             for match in UNSAFE.finditer(source)]
    assert found == []
