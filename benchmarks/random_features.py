"""RandomFeatures throughput: eocausal vs a naive full-activation-map implementation, next to
the machine's measured float32 matmul throughput.

Usage: python -m benchmarks.random_features [--n 16] [--px 256] [--features 1024] [--device cpu]
Appends a row to benchmarks/results/random_features.md.

FLOPs per chip: 2 * (px - k + 1)^2 * (features / 2) * C * k^2 (the convolution; pooling is
not counted). The naive version is conv2d over all filters, then ReLU and mean of the full
(features/2, H', W') map for both signs, as a straightforward port of MOSAIKS would do.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._machine import machine

from eocausal.encoders import RandomFeatures


def matmul_gflops(device: str, size: int = 2048, reps: int = 10) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - t) / 1e9


def naive(enc: RandomFeatures, x: torch.Tensor) -> torch.Tensor:
    lo = torch.as_tensor(enc.band_low_, device=x.device).view(1, -1, 1, 1)
    hi = torch.as_tensor(enc.band_high_, device=x.device).view(1, -1, 1, 1)
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    act = F.conv2d(x, enc.filters_.to(x.device))
    return torch.cat([torch.relu(act).mean((2, 3)), torch.relu(-act).mean((2, 3))], 1)


def timed(fn, reps: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="chips per timed call")
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--features", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "random_features.md"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    chips = rng.uniform(0, 255, (args.n, 3, args.px, args.px)).astype(np.float32)
    enc = RandomFeatures(n_features=args.features, kernel=3, seed=0, device=args.device,
                         batch_size=args.n if args.device == "cuda" else 8).fit(chips[:4])
    x = torch.as_tensor(chips, device=args.device)
    ours = enc.transform(chips)
    with torch.inference_mode():
        ref = naive(enc, x).cpu().numpy()
    err = float(np.max(np.abs(ours - ref)))
    t_ours = timed(lambda: enc.transform(chips), args.reps, args.device)
    with torch.inference_mode():
        t_naive = timed(lambda: naive(enc, x), max(1, args.reps - 1), args.device)
    peak = matmul_gflops(args.device)
    flop = 2 * (args.px - 2) ** 2 * (args.features // 2) * 3 * 9
    ours_cps, naive_cps = args.n / t_ours, args.n / t_naive
    ours_gf, naive_gf = ours_cps * flop / 1e9, naive_cps * flop / 1e9
    m = machine()
    row = (f"| {m['date']} | {m.get('gpu', m['cpu'])} ({m['cores']} cores, load {m.get('load_avg_1min')}) | "
           f"{args.device} | {args.px} | {args.features} | {ours_cps:.2f} | {naive_cps:.2f} | "
           f"{ours_cps / naive_cps:.1f}x | {peak:.1f} | {ours_gf / peak:.0%} | {naive_gf / peak:.0%} | {err:.1e} |")
    out = Path(args.out)
    if not out.exists():
        out.write_text(
            "# RandomFeatures throughput\n\n"
            "Command: `python -m benchmarks.random_features --device DEVICE` (chips of 3 bands, "
            "kernel 3). `matmul` is the measured float32 2048x2048 GEMM throughput of the same "
            "device in the same run; `% peak` = convolution FLOPs per second / matmul FLOPs per "
            "second. `max diff` = largest absolute difference between eocausal and the naive "
            "features.\n\n"
            "| date | machine | device | px | features | eocausal chips/s | naive chips/s | ratio | "
            "matmul GFLOP/s | eocausal % peak | naive % peak | max diff |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    with out.open("a") as fh:
        fh.write(row + "\n")
    print(row)


if __name__ == "__main__":
    main()
