"""CPU cost of the Fashion-MNIST training recipe: one training step of ``slide_swin_micro``, timed interleaved.

    python benchmarks/fmnist_train_speed.py --threads 2 --steps 12

Times, side by side in one run (A B A B ...), a full training step (augment, forward, loss, backward,
AdamW) at the recipe's batch size with

* ``one-conv``: the zoo's training form (both shift branches as ONE depthwise convolution with the summed
  kernels, k and v in one call), and
* ``two-branch``: the same module running ``dep_conv`` and ``dep_conv1`` separately on k and on v (four
  convolutions, as the official code writes it),

then projects the recipe's wall-clock time (30 epochs of 235 steps plus one 10k-image evaluation per epoch)
from the measured medians. The load average is printed: on a shared machine the projection is an upper bound.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from slidelite.zoo import SlideAttention, create_model
from slidelite.zoo.recipes.fashion_mnist import load_split
from slidelite.zoo.recipes.train_fmnist import MODEL, augment, to_tensor

TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000


def two_branch_shift(attn: SlideAttention, x: torch.Tensor) -> torch.Tensor:
    """The official two-branch computation of the shifted keys/values."""
    return attn.dep_conv(x) + attn.dep_conv1(x)


def make_step(two_branch: bool, images: torch.Tensor, labels: torch.Tensor, batch: int) -> Callable[[int], None]:
    """A closure running training step ``i`` of a fresh model (two-branch or one-conv form)."""
    torch.manual_seed(0)
    model = create_model(MODEL, drop_path_rate=0.05).train()
    if two_branch:
        for module in model.modules():
            if isinstance(module, SlideAttention):
                module._shift = two_branch_shift.__get__(module)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        lo = (i * batch) % (len(images) - batch)
        loss = F.cross_entropy(model(augment(images[lo:lo + batch], gen)), labels[lo:lo + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    """Time both forms interleaved and print medians, the ratio and the projected recipe time."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per form (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    raw_x, raw_y = load_split("test")
    images, labels = to_tensor(raw_x[:4096]), torch.from_numpy(raw_y[:4096])
    steps = {name: make_step(name == "two-branch", images, labels, args.batch) for name in ("one-conv", "two-branch")}
    times: Dict[str, List[float]] = {name: [] for name in steps}
    load_before = os.getloadavg()[0]
    for i in range(args.steps + 2):
        for name, step in steps.items():
            start = time.perf_counter()
            step(i)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    model = create_model(MODEL).eval()
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, 2000, 500):
            model(images[lo:lo + 500])
    eval_s = (time.perf_counter() - start) * TEST_IMAGES / 2000
    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch)
    print(f"slide_swin_micro training step, batch {args.batch}, {args.threads} threads, torch {torch.__version__}, "
          f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        total_min = args.epochs * (steps_per_epoch * median + eval_s) / 60
        print(f"  {name:<10} step p50 {median * 1000:7.0f} ms  ->  {args.epochs} epochs x {steps_per_epoch} steps "
              f"+ a {eval_s:.0f} s evaluation each: {total_min:5.0f} min")
    print(f"  one-conv is {medians['two-branch'] / medians['one-conv']:.2f}x faster per step than two-branch")


if __name__ == "__main__":
    main()
