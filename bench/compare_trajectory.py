#!/usr/bin/env python3
"""Loom and PyTorch trained from the same start: the loss at every step, side by side.

bench_train writes its initial parameters and its four batches (--save-init), torch_model.py
loads them (--load-init), and both run the same AdamW steps, so any difference comes from the
arithmetic, not from two random initialisations. Prints each step's two losses and their
difference; exits 1 when one differs by more than --tol (relative) at some step.

  python3 bench/compare_trajectory.py --loom-bin build/bench/bench_train -- \\
      --preset gpt2 --vocab 50257 --d 768 --layers 12 --heads 12 --seq 1024 --batch 1 \\
      --warmup 3 --steps 10 --threads 2 [--device cuda]

Everything after `--` goes to both programs (their shared options: preset, sizes, steps,
threads, seed, device).
"""
import argparse
import os
import sys
import tempfile

from compare_torch_gpu import ROOT, run as run_json  # the last JSON line of a benchmark program


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom-bin", default=os.path.join(ROOT, "build", "bench", "bench_train"))
    ap.add_argument("--tol", type=float, default=1e-3, help="largest relative loss difference allowed (1e-3)")
    ap.add_argument("model_args", nargs=argparse.REMAINDER, help="-- then the options both programs take")
    a = ap.parse_args()
    shared = a.model_args[1:] if a.model_args[:1] == ["--"] else a.model_args
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init.safetensors")
        loom = run_json([a.loom_bin, *shared, "--save-init", init, "--json"])
        torch = run_json([sys.executable, os.path.join(ROOT, "bench", "torch_model.py"), *shared, "--load-init", init,
                          "--json"])
    worst = 0.0
    print(f"{'step':>4s} {'Loom':>12s} {'PyTorch':>12s} {'difference':>12s}")
    for s, (l, t) in enumerate(zip(loom["losses"], torch["losses"])):
        rel = abs(l - t) / max(abs(t), 1e-12)
        worst = max(worst, rel)
        print(f"{s:4d} {l:12.6f} {t:12.6f} {l - t:12.2e}")
    print(f"largest relative difference {worst:.2e} over {len(loom['losses'])} steps "
          f"({'within' if worst <= a.tol else 'beyond'} {a.tol:g})")
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
