"""Step 6: compare a converted model with the torch model on real images, and gate the result.

The comparison is format-agnostic: it takes reference logits and the logits of the written file
(produced by any runner: onnxruntime here, LiteRT for TFLite), so every export route shares the gates.

Definitions, per image, over the logit vector: ``cosine`` = cosine similarity; ``max_rel_err`` =
max |ref - got| / max |ref| (error relative to the logit scale; an element-wise ratio explodes near 0);
``top1_agreement`` = fraction of images whose arg-max is equal. The report keeps the worst image's
cosine and relative error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np

from .errors import ParityError

FP32_MIN_COSINE = 0.99999
FP32_MAX_REL_ERR = 1e-4


@dataclass(frozen=True)
class Parity:
    """How closely one model's logits follow the reference on ``images`` inputs."""

    images: int
    cosine: float
    max_rel_err: float
    top1_agreement: float

    def as_metrics(self, prefix: str) -> Dict[str, float]:
        """Flat ``{prefix}_cosine`` etc. entries for the metadata's ``metrics``."""
        return {f"{prefix}_{key}": (round(value, 8) if isinstance(value, float) else value)
                for key, value in asdict(self).items()}


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Compare (N, classes) logits; see the module docstring for the definitions."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    got = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != got.shape:
        raise ParityError(f"the converted model returns logits of shape {got.shape}, the torch model {ref.shape}")
    dot = (ref * got).sum(1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-300), (np.abs(ref - got).max(1) == 0).astype(float))
    scale = np.maximum(np.abs(ref).max(1), 1e-12)
    rel = np.abs(ref - got).max(1) / scale
    agree = (ref.argmax(1) == got.argmax(1)).mean()
    return Parity(images=len(ref), cosine=float(cosine.min()), max_rel_err=float(rel.max()), top1_agreement=float(agree))


def torch_logits(module: Any, inputs: np.ndarray, batch: int = 8) -> np.ndarray:
    """Run the torch model on (N, C, H, W) inputs in chunks; returns float32 (N, classes)."""
    import torch

    outs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch]))).float().numpy())
    return np.concatenate(outs, axis=0)


def check_fp32(parity: Parity, what: str) -> None:
    """Refuse (raise :class:`ParityError`) when fp32 parity is under the gate: cos >= 0.99999 and rel err <= 1e-4."""
    if parity.cosine < FP32_MIN_COSINE or parity.max_rel_err > FP32_MAX_REL_ERR:
        raise ParityError(
            f"{what}: fp32 parity gate failed on {parity.images} images (cosine {parity.cosine:.7f} < "
            f"{FP32_MIN_COSINE} or max relative error {parity.max_rel_err:.2e} > {FP32_MAX_REL_ERR:.0e}); "
            "nothing was written; this is a converter bug for this model, please report it")


def check_int8(parity: Parity, what: str, min_agreement: float, force: bool) -> Optional[str]:
    """Refuse int8 whose top-1 agreement is under ``min_agreement`` unless ``force``; returns a warning when forced."""
    if parity.top1_agreement >= min_agreement:
        return None
    message = (f"{what}: int8 top-1 agreement {parity.top1_agreement:.3f} with fp32 is under --min-agreement "
               f"{min_agreement} on {parity.images} images (cosine {parity.cosine:.4f})")
    if force:
        return message + "; written anyway because of --force"
    raise ParityError(message + "; nothing was written; try another --int8-recipe, more calibration images, "
                      "or --force to write it anyway")
