"""The compatibility matrix of issue 13: every file the converter writes, on every backend, runs with torch's
top-1 on real photos or is refused in one line.

Architectures: Slide-Swin, Slide-PVT, Slide-PVTv2 (zoo, small widths) and torchvision's MobileNetV3-Small,
ResNet (BasicBlock, one block per stage) and VisionTransformer (real model code, ``tests/_torch_classifiers.py``),
all 10 classes at 64 px. Each model is seeded, then its head is fitted (least squares on the head's input
features) so that each of the six scikit-image photos gets its own class with a wide margin: the files are then
real classifiers of real photos, and "same top-1 as torch" is a statement about the photos, not about noise.

Two crossings keep it affordable:

* checkpoint formats x architectures, through the ONNX fp32 conversion only (run on onnxruntime);
* architectures x file kinds (onnx fp32, onnx int8, tflite fp32, tflite int8, from a plain state_dict)
  x backends (onnxruntime, litert, tflite, numpy). The ``tflite`` column runs in ``.venv-tflite``
  (tflite-runtime, numpy 1.26) through ``tests/_compat_probe.py``.

Used by ``tests/test_compat_matrix.py`` and ``scripts/compat_matrix.py`` (which writes docs/compatibility.md).
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from tests._cli_fixtures import run_cli
from tests._compat_probe import probe
from tests._zoo_fixtures import CHECKPOINT_LAYOUTS, official_config, save_training_checkpoint, wrap_state_dict

ROOT = Path(__file__).resolve().parents[1]
TFLITE_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"
IMG_SIZE = 64
# the six photos of slidelite.convert.samples and the class each is fitted to; four classes no photo has
PHOTO_CLASSES = {"astronaut": "astronaut", "camera": "camera", "chelsea": "cat", "coffee": "coffee cup",
                 "rocket": "rocket", "stereo_motorcycle": "motorcycle"}
LABELS = tuple(sorted(PHOTO_CLASSES.values())) + ("dog", "bird", "tree", "boat")
MARGIN = 6.0  # fitted logits: +MARGIN for the photo's class, -MARGIN for the others
BACKENDS = ("onnxruntime", "litert", "tflite", "numpy")
FORMAT_BACKENDS = {"onnx": ("onnxruntime", "numpy"), "tflite": ("litert", "tflite", "numpy")}
FILE_KINDS: Dict[str, Tuple[str, Tuple[str, ...]]] = {  # kind -> (format, convert flags): int8 as by default
    "onnx fp32": ("onnx", ()), "onnx int8": ("onnx", ("--int8",)),
    "tflite fp32": ("tflite", ()), "tflite int8": ("tflite", ("--int8",)),
}
CHECKPOINT_FORMATS = ("state_dict", "model+epoch", "ddp", "ema", "timm", "official")
# cells that must run (not only be refused), for every architecture: every file on its format's engines, and
# every ONNX file and fp32 TFLite file on numpy (int8 TFLite on numpy may be refused: hybrid CONV_2D)
MUST_RUN = {("onnx fp32", "onnxruntime"), ("onnx fp32", "numpy"), ("onnx int8", "onnxruntime"), ("onnx int8", "numpy"),
            ("tflite fp32", "litert"), ("tflite fp32", "tflite"), ("tflite fp32", "numpy"),
            ("tflite int8", "litert"), ("tflite int8", "tflite")}
FAST = ("-q", "--latency-runs", "0", "--overwrite")


# ---------------------------------------------------------------- architectures


def resnet_basic_10() -> nn.Module:
    """torchvision ResNet with one BasicBlock per stage (a ResNet-10 layout), 10 classes."""
    from tests._torch_classifiers import vision_packages

    vision_packages()
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)


def mobilenet_v3_small_10() -> nn.Module:
    """torchvision MobileNetV3-Small, 10 classes."""
    from tests._torch_classifiers import vision_packages

    vision_packages()
    from torchvision.models.mobilenetv3 import mobilenet_v3_small

    return mobilenet_v3_small(weights=None, num_classes=10)


def vit_64_10() -> nn.Module:
    """torchvision VisionTransformer at 64 px (patch 16, 2 layers, width 64), 10 classes."""
    from tests._torch_classifiers import vision_packages

    vision_packages()
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


def _zoo(name: str, **args: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from slidelite.zoo import create_model

        return create_model(name, img_size=IMG_SIZE, num_classes=10, **args)

    return build


@dataclass(frozen=True)
class Arch:
    """One architecture of the matrix: how to build it here and how the user names it to ``slidelite convert``."""

    key: str
    title: str
    build: Callable[[], nn.Module]
    convert_args: Tuple[str, ...]  # what identifies the model to the converter beside the checkpoint
    zoo_name: str = ""  # the zoo model (timm-style 'arch' of the checkpoint), '' for a user module


SWIN_ARGS = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
PVT_ARGS = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1))
_USER = ("--img-size", str(IMG_SIZE))
ARCHS: Tuple[Arch, ...] = (
    Arch("slide_swin", "Slide-Swin (slide_swin_tiny layout, 16 wide)", _zoo("slide_swin_tiny", **SWIN_ARGS),
         ("--model", "slide_swin_tiny"), "slide_swin_tiny"),
    Arch("slide_pvt", "Slide-PVT (slide_pvt_tiny layout, 16-64 wide)", _zoo("slide_pvt_tiny", **PVT_ARGS),
         ("--model", "slide_pvt_tiny"), "slide_pvt_tiny"),
    Arch("slide_pvtv2", "Slide-PVTv2 (slide_pvtv2_b1 layout, 16-64 wide)", _zoo("slide_pvtv2_b1", **PVT_ARGS),
         ("--model", "slide_pvtv2_b1"), "slide_pvtv2_b1"),
    Arch("mobilenet_v3", "torchvision MobileNetV3-Small", mobilenet_v3_small_10,
         ("--model", "tests._compat_matrix:mobilenet_v3_small_10", *_USER)),
    Arch("resnet", "torchvision ResNet (BasicBlock x 1,1,1,1)", resnet_basic_10,
         ("--model", "tests._compat_matrix:resnet_basic_10", *_USER)),
    Arch("vit", "torchvision ViT (64 px, patch 16, 2 layers)", vit_64_10,
         ("--model", "tests._compat_matrix:vit_64_10", *_USER)),
)
ARCH_BY_KEY = {arch.key: arch for arch in ARCHS}


def checkpoint_cells() -> List[Tuple[str, str]]:
    """(architecture, checkpoint format) pairs of the checkpoint crossing (official yacs: Slide-Swin only)."""
    return [(a.key, f) for a in ARCHS for f in CHECKPOINT_FORMATS if f != "official" or a.key == "slide_swin"]


# ---------------------------------------------------------------- fitted models and checkpoints


def photo_batch(photos: Path) -> Tuple[torch.Tensor, List[int]]:
    """The six photos as an ImageNet-normalized batch (shorter side to IMG_SIZE / 0.875, centre crop), and the
    index of each photo's class in LABELS."""
    import numpy as np
    from PIL import Image

    images, targets = [], []
    for name, label in sorted(PHOTO_CLASSES.items()):
        image = Image.open(photos / f"{name}.png").convert("RGB")
        scale = IMG_SIZE / 0.875 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        left, top = (image.width - IMG_SIZE) // 2, (image.height - IMG_SIZE) // 2
        pixels = np.asarray(image.crop((left, top, left + IMG_SIZE, top + IMG_SIZE)), dtype=np.float32) / 255.0
        images.append((pixels - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225))
        targets.append(LABELS.index(label))
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)), targets


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier head: the last ``nn.Linear`` registered in the model."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def fit_head(model: nn.Module, inputs: torch.Tensor, targets: Sequence[int]) -> nn.Module:
    """Set the head so that ``inputs[i]`` scores ``+MARGIN`` for class ``targets[i]`` and ``-MARGIN`` for the
    others (least squares on the head's input features, ridge-regularized); in place, returned."""
    head, captured = head_of(model), []
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    with torch.no_grad():
        model(inputs)
    hook.remove()
    features = captured[0].reshape(len(inputs), -1).double()
    mean = features.mean(0, keepdim=True)
    centred = features - mean
    wanted = torch.full((len(inputs), head.out_features), -MARGIN, dtype=torch.float64)
    wanted[range(len(inputs)), list(targets)] = MARGIN
    gram = centred @ centred.T + 1e-3 * torch.eye(len(inputs), dtype=torch.float64) * centred.pow(2).sum() / len(inputs)
    weight = (centred.T @ torch.linalg.solve(gram, wanted - wanted.mean(0, keepdim=True))).T
    with torch.no_grad():
        head.weight.copy_(weight.float())
        head.bias.copy_((wanted.mean(0) - (mean @ weight.T).squeeze(0)).float())
    return model


def fitted_model(arch: Arch, photos: Path, seed: int = 0, shift: int = 0) -> nn.Module:
    """``arch`` seeded with ``seed``, its head fitted to the photos (each photo's class moved by ``shift``)."""
    torch.manual_seed(seed)
    model = arch.build().eval()
    inputs, targets = photo_batch(photos)
    return fit_head(model, inputs, [(t + shift) % len(LABELS) for t in targets])


def save_checkpoint(model: nn.Module, other: nn.Module, arch: Arch, fmt: str, path: Path) -> Tuple[str, ...]:
    """Save ``model`` as checkpoint format ``fmt`` at ``path`` (``other``: the non-EMA weights beside the EMA
    ones); return the convert flags that format needs."""
    state = model.state_dict()
    if fmt in CHECKPOINT_LAYOUTS:
        torch.save(wrap_state_dict(fmt, state, other.state_dict()), path)
        return ("--ema",) if fmt == "ema" else ()
    if fmt == "timm":
        torch.save({"state_dict": state, "arch": arch.zoo_name or arch.key, "epoch": 3, "version": 2}, path)
    elif fmt == "official":
        config = official_config("slide_swin_tiny", img_size=IMG_SIZE, num_classes=10, EMBED_DIM=16,
                                 DEPTHS=[1, 1, 1, 1], NUM_HEADS=[1, 2, 2, 4])
        config.defrost()
        config.MODEL.NAME = "my_run_42"  # a run name, not a registered model: built from MODEL.TYPE + sizes
        config.freeze()
        save_training_checkpoint(path, model, config)
    else:
        raise ValueError(f"unknown checkpoint format {fmt}")
    return ()


# ---------------------------------------------------------------- conversion and cells


@dataclass
class Conversion:
    """One ``slidelite convert`` run: the file (None when refused) and the CLI's exit code and stderr."""

    path: Optional[Path]
    exit_code: int
    stderr: str

    @property
    def message(self) -> str:
        """The refusal's error line ('' when written)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def convert(arch: Arch, checkpoint: Path, kind: str, out: Path, photos: Path, labels: Path,
            extra: Sequence[str] = ()) -> Conversion:
    """Convert ``checkpoint`` to file kind ``kind`` at ``out`` through the CLI (photos as calibration set)."""
    fmt, flags = FILE_KINDS[kind]
    run = run_cli(["convert", *arch.convert_args, "--checkpoint", checkpoint, "--labels", labels, "--format", fmt,
                   "-o", out, "--calib", photos, *flags, *extra, *FAST])
    return Conversion(out if run.exit_code == 0 else None, run.exit_code, run.stderr)


def torch_top1(model: nn.Module, onnx_fp32: Path, photos: Path) -> Dict[str, str]:
    """torch's top-1 label per photo file name, on the input the runtime makes from the fp32 file's metadata."""
    import numpy as np

    from slidelite.model_file import open_model_file
    from slidelite.preprocess import prepare_input

    metadata = open_model_file(onnx_fp32).metadata
    names = sorted(f"{name}.png" for name in PHOTO_CLASSES)
    batch = np.concatenate([prepare_input(photos / name, metadata) for name in names]).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(batch)).numpy()
    return {name: LABELS[int(i)] for name, i in zip(names, logits.argmax(1))}


@dataclass
class Cell:
    """One file on one backend: ``runs`` (every photo gets torch's top-1), ``refused`` (one line, the expected
    exit code) or ``fails`` (anything else: a wrong top-1, a traceback, several lines, a wrong exit code)."""

    arch: str
    kind: str
    backend: str
    outcome: str
    detail: str
    info_says_runs: Optional[bool] = None
    probe: Dict[str, Any] = field(default_factory=dict, repr=False)


def expected_refusal_exit(fmt: str, backend: str) -> int:
    """2 (usage error) when the backend does not take the format at all, else 1 (the file is refused)."""
    return 1 if backend in FORMAT_BACKENDS[fmt] else 2


def judge(arch: str, kind: str, backend: str, result: Dict[str, Any], reference: Dict[str, str]) -> Cell:
    """The cell of one probe result (``tests/_compat_probe.py``) against torch's top-1 ``reference``."""
    run = result["classify"]
    lines = [line for line in run["stderr"].splitlines() if line.strip()]
    info = result["can_run"].get(backend)
    cell = Cell(arch, kind, backend, "fails", "", info, result)
    if run["exception"] or "Traceback" in run["stderr"]:
        cell.detail = f"escaped the CLI: {run['exception'] or lines[-1]}"
    elif run["exit"] == 0:
        wrong = {k: v for k, v in result["top1"].items() if reference.get(k) != v}
        missing = sorted(set(reference) - set(result["top1"]))
        cell.outcome = "runs" if not wrong and not missing else "fails"
        cell.detail = (f"top-1 = torch on {len(reference)} photos" if cell.outcome == "runs"
                       else f"top-1 differs from torch: {wrong}, missing {missing}")
    elif len(lines) == 1 and run["exit"] == expected_refusal_exit(kind.split()[0], backend):
        cell.outcome, cell.detail = "refused", lines[0]
    else:
        cell.detail = f"exit {run['exit']}, {len(lines)} stderr lines: {' / '.join(lines)[:300]}"
    return cell


def probe_backend(files: Sequence[Path], backend: str, photos: Path) -> List[Dict[str, Any]]:
    """:func:`tests._compat_probe.probe` here, or for ``tflite`` in ``.venv-tflite`` (a subprocess)."""
    if backend != "tflite":
        return probe([str(f) for f in files], backend, str(photos))
    assert TFLITE_PYTHON.is_file(), f"{TFLITE_PYTHON} is missing: run scripts/setup_tflite.sh"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(TFLITE_PYTHON), "-m", "tests._compat_probe", backend, str(photos), *map(str, files)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one run of the matrix (files cached)


class MatrixRun:
    """The matrix in ``folder``: fitted models, checkpoints, converted files and cells, each made once."""

    def __init__(self, folder: Path) -> None:
        from slidelite.convert.samples import write_sample_photos

        self.folder = Path(folder)
        self.photos = self.folder / "photos"
        write_sample_photos(self.photos, crops=0)
        self.labels = self.folder / "labels.txt"
        self.labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
        self._models: Dict[Tuple[str, int], nn.Module] = {}
        self._files: Dict[Tuple[str, str], Conversion] = {}
        self._references: Dict[str, Dict[str, str]] = {}

    def model(self, arch: str, variant: int = 0) -> nn.Module:
        """The fitted model of ``arch`` (variant 1: other seed, classes shifted: the non-EMA weights)."""
        key = (arch, variant)
        if key not in self._models:
            self._models[key] = fitted_model(ARCH_BY_KEY[arch], self.photos, seed=variant, shift=variant)
        return self._models[key]

    def checkpoint(self, arch: str, fmt: str) -> Tuple[Path, Tuple[str, ...]]:
        """``arch``'s fitted weights saved as checkpoint format ``fmt``, and the flags it needs."""
        path = self.folder / f"{arch}-{fmt.replace('+', '_')}.pth"
        other = self.model(arch, 1) if fmt == "ema" else self.model(arch)
        return path, save_checkpoint(self.model(arch), other, ARCH_BY_KEY[arch], fmt, path)

    def file(self, arch: str, kind: str, fmt: str = "state_dict") -> Conversion:
        """File kind ``kind`` converted from ``arch``'s checkpoint in format ``fmt`` (converted once)."""
        key = (f"{arch}-{fmt}", kind)
        if key not in self._files:
            checkpoint, flags = self.checkpoint(arch, fmt)
            suffix = FILE_KINDS[kind][0]
            out = self.folder / f"{arch}-{fmt.replace('+', '_')}-{kind.replace(' ', '-')}.{suffix}"
            self._files[key] = convert(ARCH_BY_KEY[arch], checkpoint, kind, out, self.photos, self.labels, flags)
        return self._files[key]

    def reference(self, arch: str) -> Dict[str, str]:
        """torch's top-1 per photo for ``arch`` (the runtime's preprocessing, from the fp32 ONNX file)."""
        if arch not in self._references:
            fp32 = self.file(arch, "onnx fp32")
            assert fp32.path is not None, f"{arch}: the fp32 ONNX conversion was refused: {fp32.message}"
            self._references[arch] = torch_top1(self.model(arch), fp32.path, self.photos)
        return self._references[arch]

    def file_cells(self, arch: str) -> Tuple[Dict[str, Conversion], List[Cell]]:
        """Every file kind of ``arch`` (from its plain state_dict) on every backend."""
        reference = self.reference(arch)
        made = {kind: self.file(arch, kind) for kind in FILE_KINDS}
        files = {kind: c.path for kind, c in made.items() if c.path is not None}
        cells = []
        for backend in BACKENDS:
            results = dict(zip(files, probe_backend(list(files.values()), backend, self.photos)))
            cells += [judge(arch, kind, backend, results[kind], reference) for kind in files]
        return made, cells

    def checkpoint_cell(self, arch: str, fmt: str) -> Tuple[Conversion, Optional[Cell]]:
        """``arch``'s checkpoint in format ``fmt`` converted to ONNX fp32 and run on onnxruntime."""
        made = self.file(arch, "onnx fp32", fmt)
        if made.path is None:
            return made, None
        result = probe_backend([made.path], "onnxruntime", self.photos)[0]
        return made, judge(arch, f"onnx fp32 from {fmt}", "onnxruntime", result, self.reference(arch))
