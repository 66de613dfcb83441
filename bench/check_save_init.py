#!/usr/bin/env python3
"""ctest bench.save_init: bench_train --save-init writes what torch_model.py --load-init reads.

Runs bench_train (argv[1]) on a small Llama (GQA) and a small GPT-2 (tied head, learned
positions) with --save-init and checks the file: the parameters' element count equals the
parameter count bench_train reports (a tied head stored once), every name is a Hugging Face
one, and the four batches are i64 [B, T] inputs and [B * T] targets, each row's targets its
inputs shifted by one. Needs no PyTorch.
"""
import json
import os
import subprocess
import sys
import tempfile

B, T = 2, 16


def header(path):
    with open(path, "rb") as f:
        return json.loads(f.read(int.from_bytes(f.read(8), "little")))


def values_i64(path, info):
    with open(path, "rb") as f:
        start = 8 + int.from_bytes(f.read(8), "little")
        f.seek(start + info["data_offsets"][0])
        raw = f.read(info["data_offsets"][1] - info["data_offsets"][0])
    return [int.from_bytes(raw[i:i + 8], "little", signed=True) for i in range(0, len(raw), 8)]


def check(bench, preset, extra):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "init.safetensors")
        cmd = [bench, "--preset", preset, "--vocab", "64", "--d", "32", "--layers", "2", "--heads", "4", *extra,
               "--seq", str(T), "--batch", str(B), "--warmup", "0", "--steps", "1", "--save-init", path, "--json"]
        run = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        h = header(path)
        params = {k: v for k, v in h.items() if k != "__metadata__" and not k.startswith("data.")}
        count = 0
        for name, info in params.items():
            assert name.startswith(("model.", "lm_head.")), f"{preset}: {name} is not a Hugging Face name"
            assert info["dtype"] == "F32", f"{preset}: {name} is {info['dtype']}"
            n = 1
            for s in info["shape"]:
                n *= s
            count += n
        assert count == run["params"], f"{preset}: {count} parameter elements saved, bench_train reports {run['params']}"
        for i in range(4):
            x, y = h[f"data.x{i}"], h[f"data.y{i}"]
            assert x["dtype"] == y["dtype"] == "I64" and x["shape"] == [B, T] and y["shape"] == [B * T], (x, y)
            xs, ys = values_i64(path, x), values_i64(path, y)
            for b in range(B):
                assert xs[b * T + 1:(b + 1) * T] == ys[b * T:(b + 1) * T - 1], f"{preset}: batch {i} row {b}"
        print(f"{preset}: {len(params)} parameters ({count} elements) and 4 batches as expected")


if __name__ == "__main__":
    check(sys.argv[1], "llama", ["--kv-heads", "2"])
    check(sys.argv[1], "gpt2", [])
