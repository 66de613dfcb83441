#!/usr/bin/env python3
"""Loom vs PyTorch training steps on one GPU, alternating the two in one run.

Runs bench_train --device cuda and torch_model.py --device cuda (same model, same AdamW, f32,
TF32 off on PyTorch's side because Loom's cuBLAS calls use full FP32) for each configuration,
`--rounds` times each, and prints per configuration the median step time of each, the ratio
PyTorch/Loom (> 1: Loom is faster), tokens/s and MFU against each side's measured f32 GEMM rate.

  python3 bench/compare_torch_gpu.py --loom-bin build/bench/bench_train [--rounds 2] [--out FILE]

PyTorch runs eager (no torch.compile) with its fused AdamW and F.scaled_dot_product_attention.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The CPU benchmark's configurations (launch-bound on a GPU) and two GPU-sized ones.
CONFIGS = [
    dict(name="llama-tiny", preset="llama", vocab=4096, d=128, layers=4, heads=4, seq=128, batch=16),
    dict(name="llama-small", preset="llama", vocab=8192, d=256, layers=6, heads=8, seq=256, batch=8),
    dict(name="gpt2-small", preset="gpt2", vocab=8192, d=256, layers=6, heads=8, seq=256, batch=8),
    dict(name="gpt2-124M-T64", preset="gpt2", vocab=50257, d=768, layers=12, heads=12, seq=64, batch=4),
    dict(name="gpt2-124M-T1024", preset="gpt2", vocab=50257, d=768, layers=12, heads=12, seq=1024, batch=8),
    dict(name="llama-d1024-T1024", preset="llama", vocab=32000, d=1024, layers=8, heads=16, kv_heads=4, seq=1024,
         batch=8),
]


def args_of(cfg, warmup, steps):
    out = ["--preset", cfg["preset"], "--device", "cuda", "--warmup", str(warmup), "--steps", str(steps), "--json"]
    for k in ("vocab", "d", "layers", "heads", "kv_heads", "seq", "batch"):
        if k in cfg:
            out += ["--" + k.replace("_", "-"), str(cfg[k])]
    return out


def run(cmd):
    """The JSON line a benchmark program prints last; stops the calling script if the program fails."""
    me = os.path.basename(sys.argv[0])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"{me}: cannot run {cmd[0]}: {e.strerror}")
    if r.returncode != 0:
        sys.exit(f"{me}: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom-bin", default=os.path.join(ROOT, "build", "bench", "bench_train"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--configs", default=",".join(c["name"] for c in CONFIGS))
    ap.add_argument("--out", help="write every run and the summary here as JSON")
    a = ap.parse_args()
    wanted = a.configs.split(",")
    results = []
    for cfg in [c for c in CONFIGS if c["name"] in wanted]:
        runs = {"loom": [], "pytorch": []}
        for _ in range(a.rounds):
            runs["loom"].append(run([a.loom_bin] + args_of(cfg, a.warmup, a.steps)))
            runs["pytorch"].append(run([sys.executable, os.path.join(ROOT, "bench", "torch_model.py")] +
                                       args_of(cfg, a.warmup, a.steps)))
        summary = {}
        for fw, rs in runs.items():
            med = statistics.median(t for r in rs for t in r["step_s"])
            peak = max(r["gemm_peak_gflops"] for r in rs)
            fpt, tokens = rs[0]["flops_per_token"], cfg["batch"] * cfg["seq"]
            summary[fw] = {"median_step_s": med, "tokens_per_s": tokens / med, "gemm_peak_gflops": peak,
                           "mfu": fpt * tokens / med / (peak * 1e9), "params": rs[0]["params"],
                           "last_loss": rs[-1]["last_loss"]}
        ratio = summary["pytorch"]["median_step_s"] / summary["loom"]["median_step_s"]
        results.append({"config": cfg, "summary": summary, "torch_over_loom": ratio, "runs": runs})
        l, p = summary["loom"], summary["pytorch"]
        print(f"{cfg['name']:18s} Loom {l['median_step_s'] * 1e3:8.2f} ms ({l['tokens_per_s']:9.0f} tok/s, "
              f"MFU {100 * l['mfu']:5.1f}%)  PyTorch {p['median_step_s'] * 1e3:8.2f} ms "
              f"(MFU {100 * p['mfu']:5.1f}%)  PyTorch/Loom {ratio:5.2f}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"results": results}, f, indent=1)


if __name__ == "__main__":
    main()
