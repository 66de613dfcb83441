#!/usr/bin/env python3
"""Loom's CUDA kernels against PyTorch's on the same GPU, in one run.

Runs bench_cuda (which times each op: 3 warm-up calls, then the best of 5 rounds of back-to-back
calls with one device sync per round) and times the same ops, shapes and dtypes in PyTorch the
same way. Prints each op's time, rate and the ratio PyTorch/Loom (> 1: Loom is faster), and
writes both sides as JSON.

  python3 bench/compare_torch_cuda.py --bench build/bench/bench_cuda [--out results.json]

TF32 is off on the PyTorch side because Loom's cuBLAS calls use full FP32 math.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def seconds_per_call(torch, reps, fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    best = 1e30
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def torch_rows(torch):
    F = torch.nn.functional
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device=dev, generator=g)

    rows = {}
    with torch.no_grad():
        big = randn(1 << 26)
        rows["copy 256 MiB"] = seconds_per_call(torch, 20, lambda: big.clone())
        for n in (2048, 4096, 8192):
            a, b = randn(n, n), randn(n, n)
            rows[f"matmul {n}^3"] = seconds_per_call(torch, 3 if n >= 8192 else 10, lambda: a @ b)
        R, C, V, RV = 8192, 2048, 32000, 2048
        x, y, w, bias = randn(R, C), randn(R, C), randn(C), randn(C)
        wmlp = randn(4 * C, C)
        rows["linear [8192,2048]x[8192,2048]^T"] = seconds_per_call(torch, 5, lambda: F.linear(x, wmlp))
        rows["add [8192,2048]"] = seconds_per_call(torch, 50, lambda: x + y)
        rows["add bias [8192,2048]+[2048]"] = seconds_per_call(torch, 50, lambda: x + bias)
        rows["mul_scalar [8192,2048]"] = seconds_per_call(torch, 50, lambda: x * 0.5)
        rows["gelu_tanh [8192,2048]"] = seconds_per_call(torch, 50, lambda: F.gelu(x, approximate="tanh"))
        rows["silu [8192,2048]"] = seconds_per_call(torch, 50, lambda: F.silu(x))
        rows["softmax [8192,2048]"] = seconds_per_call(torch, 50, lambda: torch.softmax(x, -1))
        rows["rms_norm [8192,2048]"] = seconds_per_call(torch, 50, lambda: F.rms_norm(x, (C,), w, 1e-6))
        rows["layer_norm [8192,2048]"] = seconds_per_call(torch, 50, lambda: F.layer_norm(x, (C,), w, bias, 1e-5))
        rows["swiglu [8192,2048]"] = seconds_per_call(torch, 50, lambda: F.silu(x) * y)
        rows["sum dim 0 [8192,2048]"] = seconds_per_call(torch, 50, lambda: x.sum(0))
        rows["sum dim 1 [8192,2048]"] = seconds_per_call(torch, 50, lambda: x.sum(1))
        xs, ys = randn(2048, 256), randn(2048, 256)
        rows["add [2048,256] (launch-bound)"] = seconds_per_call(torch, 200, lambda: xs + ys)
        logits = randn(RV, V)
        target = (torch.arange(RV, device=dev) * 7919) % V
        rows["cross_entropy [2048,32000]"] = seconds_per_call(torch, 20, lambda: F.cross_entropy(logits, target))
    # Attention in PyTorch's own layout [B, H, T, D] (its SDPA picks the kernel; f32 rules out flash).
    q, k, v, go = (randn(8, 12, 1024, 64) for _ in range(4))
    with torch.no_grad():
        rows["attention fwd B8 T1024 H12 D64 causal"] = seconds_per_call(
            torch, 10, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def attn_fwd_bwd():
        F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).backward(go)
        qg.grad = kg.grad = vg.grad = None

    rows["attention fwd+bwd B8 T1024 H12 D64 causal"] = seconds_per_call(torch, 5, attn_fwd_bwd)
    # 16 query heads over 4 kv heads of width 128 (SDPA's enable_gqa shares them as Loom does).
    q, go = randn(4, 16, 1024, 128), randn(4, 16, 1024, 128)
    k, v = randn(4, 4, 1024, 128), randn(4, 4, 1024, 128)
    with torch.no_grad():
        rows["attention fwd B4 T1024 H16/4 D128 causal"] = seconds_per_call(
            torch, 10, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def gqa_fwd_bwd():
        F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True).backward(go)
        qg.grad = kg.grad = vg.grad = None

    rows["attention fwd+bwd B4 T1024 H16/4 D128 causal"] = seconds_per_call(torch, 5, gqa_fwd_bwd)
    # PyTorch's fastest AdamW: the fused multi-tensor CUDA kernel (fused=True), one 64M tensor.
    p = torch.nn.Parameter(randn(1 << 26))
    p.grad = randn(1 << 26)
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    rows["adamw step 64M params"] = seconds_per_call(torch, 10, opt.step)
    del opt, p
    xr, wr, gy = x.clone().requires_grad_(), w.clone().requires_grad_(), randn(R, C)

    def rms_fwd_bwd():
        F.rms_norm(xr, (C,), wr, 1e-6).backward(gy)
        xr.grad = None
        wr.grad = None

    rows["rms_norm fwd+bwd [8192,2048]"] = seconds_per_call(torch, 20, rms_fwd_bwd)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bench/bench_cuda", help="the bench_cuda program")
    ap.add_argument("--out", help="write both sides' results here as JSON")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("compare_torch_cuda: PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "loom.json")
        subprocess.run([args.bench, "--json", path], check=True)
        with open(path) as f:
            loom = json.load(f)
    theirs = torch_rows(torch)
    copy = next(r for r in loom["rows"] if r["name"] == "copy 256 MiB")
    copy_bw = copy["amount"] / copy["seconds"] / 1e9
    print(f"\nLoom vs PyTorch {torch.__version__} on {loom['device']} (TF32 off on both sides)")
    print(f"{'op':36s} {'Loom ms':>9s} {'torch ms':>9s} {'torch/Loom':>10s} {'Loom rate':>16s}")
    table = []
    for r in loom["rows"]:
        t = theirs.get(r["name"])
        rate = r["amount"] / r["seconds"] / 1e9
        unit = "GFLOP/s" if r["gflops"] else "GB/s"
        ratio = t / r["seconds"] if t else float("nan")
        print(f"{r['name']:36s} {r['seconds'] * 1e3:9.3f} {t * 1e3 if t else float('nan'):9.3f} {ratio:10.2f} "
              f"{rate:9.1f} {unit}")
        table.append({**r, "torch_seconds": t, "torch_over_loom": ratio})
    print(f"(device copy bandwidth measured by Loom: {copy_bw:.0f} GB/s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": loom["device"], "torch": torch.__version__, "rows": table}, f, indent=1)


if __name__ == "__main__":
    main()
