"""The Fashion-MNIST training recipe: seeded, resumable, hold-out evaluation (tiny runs on real data)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
from slidelite.zoo.recipes import train_fmnist  # noqa: E402

TINY = ["--max-train", "768", "--holdout", "256", "--batch", "256", "--threads", "1"]


def _train(run_dir: Path, epochs: int) -> dict:
    weights = run_dir / "w.pth"
    train_fmnist.main(["--out", str(run_dir), "--weights-out", str(weights), "--epochs", str(epochs), *TINY])
    return json.loads((run_dir / "train_log.json").read_text())


def test_same_seed_same_weights_and_resume_continues(tmp_path: Path) -> None:
    first = _train(tmp_path / "a", 2)
    again = _train(tmp_path / "b", 2)
    assert first["weights_sha256"] == again["weights_sha256"], "fixed seed must give the same weights"
    assert [e["epoch"] for e in first["log"]] == [1, 2]
    assert first["args"]["holdout"] == 256 and all(0 <= e["test_top1"] <= 100 for e in first["log"])
    digest = (tmp_path / "a" / "w.pth.sha256").read_text().split()[0]
    assert digest == first["weights_sha256"]

    resumed = _train(tmp_path / "a", 3)          # same folder: resumes from last.pth after epoch 2
    assert [e["epoch"] for e in resumed["log"]] == [1, 2, 3]
    assert resumed["log"][:2] == first["log"]
    assert resumed["weights_sha256"] != first["weights_sha256"]
