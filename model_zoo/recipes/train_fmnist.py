"""Training recipe: ``slide_swin_micro`` on Fashion-MNIST, on a CPU, resumable.

    python -m slidelite.zoo.recipes.train_fmnist --out runs/fmnist            # 2-core CPU, <= 2 hours
    python -m slidelite.zoo.recipes.train_fmnist --out runs/fmnist --device cuda

Fixed seed; AdamW (lr 3e-3, batch 256, weight decay 0.05) + cosine schedule with one warm-up epoch, label
smoothing 0.1, stochastic depth 0.05, random-crop/flip augmentation, 30 epochs. These defaults were chosen
on a 5,000-image hold-out of the training split (``--holdout 5000``), never on the test split.
Inputs are normalized exactly as the runtime will do it from the model metadata
(``(pixel / 255 - mean) / std`` with the registered pretrained config), at the native 28x28, so no
resize is involved. A checkpoint is written after every epoch and the run resumes from it; when the
time budget (or ``--budget-min`` given on resume) changes, the cosine schedule is re-planned for the
number of epochs that fit (at most ``--epochs``). The final weights are the last epoch's (no selection on the test split).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from slidelite.zoo import create_model, get_pretrained_cfg
from slidelite.zoo.recipes.fashion_mnist import DEFAULT_ROOT, load_split

MODEL = "slide_swin_micro"
DATA_ROOT_ENV = "SLIDELITE_FMNIST_ROOT"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalized float (N, 1, 28, 28) with the model's mean/std."""
    cfg = get_pretrained_cfg(MODEL)
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return (x - cfg.mean[0]) / cfg.std[0]


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel zero padding (in normalized units: pad with the value of pixel 0) and h-flip."""
    n = x.shape[0]
    pad_value = float(x.min())
    padded = F.pad(x, (2, 2, 2, 2), value=pad_value)
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(28)[None, :])[:, None, :, None].expand(n, 1, 28, 32)
    out = torch.gather(padded, 2, rows.to(x.device))
    cols = (dx[:, None] + torch.arange(28)[None, :])[:, None, None, :].expand(n, 1, 28, 28)
    out = torch.gather(out, 3, cols.to(x.device))
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy (%) of ``model`` on (x, y)."""
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def replan(state: dict, args: argparse.Namespace) -> None:
    """Set the number of epochs that fit the time budget (median epoch time so far), at most ``--epochs``."""
    if not state["log"]:
        return
    per_epoch = statistics.median(entry["epoch_s"] for entry in state["log"])
    fits = state["epoch"] + int((args.budget_min * 60 - state["elapsed_s"]) // per_epoch)
    planned = max(state["epoch"], min(args.epochs, fits))
    if planned != state["planned_epochs"]:
        state["planned_epochs"] = planned
        print(f"time budget: schedule re-planned to {planned} epochs", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Train, checkpoint every epoch, write final weights + sha256 + a JSON log."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/fmnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--drop-path", type=float, default=0.05, help="stochastic depth rate of the model")
    ap.add_argument("--device", default="cpu", help="torch device (the recipe is sized for a 2-core CPU)")
    ap.add_argument("--holdout", type=int, default=0,
                    help="evaluate on the last N training images instead of the test split (for recipe tuning)")
    ap.add_argument("--data", default=os.environ.get(DATA_ROOT_ENV, DEFAULT_ROOT), help="Fashion-MNIST IDX folder")
    ap.add_argument("--max-train", type=int, default=0, help="use only the first N training images (smoke tests)")
    ap.add_argument("--budget-min", type=float, default=110.0, help="wall-clock budget; the schedule adapts")
    ap.add_argument("--weights-out", default="model_zoo/weights/slide_swin_micro_fmnist.pth")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "last.pth")
    device = torch.device(args.device)
    train_x, train_y = load_split("train", args.data)
    test_x, test_y = load_split("test", args.data)
    if args.max_train:
        train_x, train_y = train_x[:args.max_train], train_y[:args.max_train]
    if args.holdout:
        train_x, test_x = train_x[:-args.holdout], train_x[-args.holdout:]
        train_y, test_y = train_y[:-args.holdout], train_y[-args.holdout:]
    xtr, ytr = to_tensor(train_x).to(device), torch.from_numpy(train_y).to(device)
    xte, yte = to_tensor(test_x).to(device), torch.from_numpy(test_y).to(device)

    model = create_model(MODEL, drop_path_rate=args.drop_path).to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "relative_position" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    state = {"epoch": 0, "planned_epochs": args.epochs, "elapsed_s": 0.0, "log": []}
    if os.path.exists(ckpt_path):
        saved = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        state = json.loads(saved["state"])
        print(f"resumed at epoch {state['epoch']}")
        replan(state, args)

    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    warmup = steps_per_epoch
    while state["epoch"] < state["planned_epochs"]:
        epoch, t0 = state["epoch"], time.time()
        total = state["planned_epochs"] * steps_per_epoch
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{state['planned_epochs']}", mininterval=5)
        running = 0.0
        for i in bar:
            step = epoch * steps_per_epoch + i
            lr = args.lr * (step + 1) / warmup if step < warmup else \
                0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[i * args.batch:(i + 1) * args.batch].to(device)
            loss = F.cross_entropy(model(augment(xtr[idx], gen)), ytr[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            running = 0.98 * running + 0.02 * value if i else value
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.2e}")
        acc = evaluate(model, xte, yte)
        state["epoch"] += 1
        state["elapsed_s"] += time.time() - t0
        state["log"].append({"epoch": state["epoch"], "loss": round(running, 4), "test_top1": round(acc, 2),
                             "epoch_s": round(time.time() - t0, 1)})
        print(json.dumps(state["log"][-1]), flush=True)
        replan(state, args)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "state": json.dumps(state)}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    os.makedirs(os.path.dirname(args.weights_out), exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.weights_out)
    digest = hashlib.sha256(open(args.weights_out, "rb").read()).hexdigest()
    with open(args.weights_out + ".sha256", "w") as handle:
        handle.write(f"{digest}  {os.path.basename(args.weights_out)}\n")
    with open(os.path.join(args.out, "train_log.json"), "w") as handle:
        json.dump({"args": vars(args), **state, "weights_sha256": digest}, handle, indent=1)
    print(f"done: test top-1 {state['log'][-1]['test_top1']}% weights {args.weights_out} sha256 {digest}")


if __name__ == "__main__":
    main()
