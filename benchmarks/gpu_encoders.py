"""GPU encoder throughput: ResNet-50 at 224 px in bf16 and RandomFeatures at 256 px.

Usage (on a CUDA machine): python -m benchmarks.gpu_encoders --out benchmarks/results/gpu_encoders.md
Goals on one H100: ResNet-50 >= 2,500 chips/s; RandomFeatures (1,024 features) >= 2,000 chips/s.
Two figures per encoder: "model" = chips already on the GPU (the encoder's torch forward under
inference mode, channels-last and bf16 autocast where the encoder uses them), "end to end" =
numpy chips in host memory through ``transform`` (includes host-to-device copies).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._machine import machine

from eocausal.encoders import Pretrained, RandomFeatures
from eocausal.encoders.backbones import build_backbone


def sync():
    torch.cuda.synchronize()


def rate(fn, n_chips: int, reps: int = 5) -> float:
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return n_chips * reps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_encoders.md"))
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs CUDA"
    dev = torch.device("cuda")
    results = {}

    # ---- ResNet-50, 224 px, bf16, from a checkpoint saved from random weights
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    net = build_backbone("resnet50", 3)
    torch.save(net.state_dict(), tmp / "r50.pth")
    (tmp / "r50.pth.json").write_text(json.dumps({"arch": "resnet50", "mean": [0.485, 0.456, 0.406],
                                                   "std": [0.229, 0.224, 0.225], "scale": 255.0}))
    enc = Pretrained(weights=tmp / "r50.pth", device="cuda", batch_size=args.batch, amp="bf16")
    chips = np.random.default_rng(0).uniform(0, 255, (args.batch, 3, 224, 224)).astype(np.float32)
    enc.fit(chips[:8])
    xg = torch.as_tensor(chips, device=dev)
    model = enc._model_on(dev)

    def r50_model():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(enc._prepare(xg).contiguous(memory_format=torch.channels_last))

    results["resnet50_bf16_model"] = rate(r50_model, args.batch)
    results["resnet50_bf16_end_to_end"] = rate(lambda: enc.transform(chips), args.batch, reps=3)

    # ---- RandomFeatures, 256 px, 3 bands, 1,024 features
    chips = np.random.default_rng(1).uniform(0, 255, (256, 3, 256, 256)).astype(np.float32)
    rf = RandomFeatures(n_features=1024, seed=0, device="cuda", batch_size=256).fit(chips[:16])
    xg = torch.as_tensor(chips, device=dev)
    filt = rf.filters_.to(dev)
    lo = torch.as_tensor(rf.band_low_, device=dev).view(1, -1, 1, 1)
    hi = torch.as_tensor(rf.band_high_, device=dev).view(1, -1, 1, 1)

    def rf_model():
        with torch.inference_mode():
            rf._pooled(((xg - lo) / (hi - lo)).clamp_(0, 1), filt)

    results["random_features_model"] = rate(rf_model, len(chips))
    results["random_features_end_to_end"] = rate(lambda: rf.transform(chips), len(chips), reps=3)
    cpu = RandomFeatures(n_features=1024, seed=0, device="cpu").fit(chips[:16]).transform(chips[:4])
    results["random_features_max_abs_diff_vs_cpu"] = float(np.abs(rf.transform(chips[:4]) - cpu).max())

    m = machine()
    lines = [f"## {m['date']}: {m.get('gpu')} (torch {m.get('torch')})", "",
             "| measure | chips/s | goal |", "|---|---|---|",
             f"| ResNet-50 224 px bf16, chips on GPU | {results['resnet50_bf16_model']:.0f} | >= 2,500 |",
             f"| ResNet-50 224 px bf16, numpy in host memory | {results['resnet50_bf16_end_to_end']:.0f} | |",
             f"| RandomFeatures 256 px 1,024 features, chips on GPU | {results['random_features_model']:.0f} | >= 2,000 |",
             f"| RandomFeatures 256 px 1,024 features, numpy in host memory | {results['random_features_end_to_end']:.0f} | |",
             "", f"RandomFeatures max |GPU - CPU| on 4 chips: {results['random_features_max_abs_diff_vs_cpu']:.2e}", ""]
    out = Path(args.out)
    head = "" if out.exists() else "# GPU encoder throughput\n\nCommand: `bash benchmarks/gpu.sh` (runs the CUDA tests, then this script).\n\n"
    with out.open("a") as fh:
        fh.write(head + "\n".join(lines) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
