"""torch_model.py: Loom's TransformerLM (models/transformer.cpp) in PyTorch eager, and a timed
training loop that prints the same JSON as bench/bench_train.cpp. compare_torch.py runs the two
alternately; this file keeps the two models equal (same parameter count, same FLOPs).

  llama: RMSNorm (eps 1e-5), RoPE rotate-half (theta 1e4), GQA attention through
         F.scaled_dot_product_attention(is_causal=True), SwiGLU with F = (8 C / 3 + 31) // 32 * 32,
         no biases, untied LM head.
  gpt2:  LayerNorm (eps 1e-5), learned positions (max_seq_len = T), GELU(tanh), biases, 4 C MLP,
         LM head tied to the token embedding.

Run:  python bench/torch_model.py --preset llama --vocab 4096 --d 128 --layers 4 --heads 4 \
          --seq 128 --batch 16 --steps 10 --warmup 3 --threads 1 [--adamw fused|foreach|forloop]
      python bench/torch_model.py ... --probe-adamw   # times each AdamW implementation, prints JSON
      python bench/torch_model.py ... --precision autocast|medium   # bf16 matmuls (see PRECISIONS)
      python bench/torch_model.py ... --load-init FILE   # start from bench_train --save-init's
                                                          # parameters and batches
"""
import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


RSS_AFTER_IMPORT_MB = peak_rss_mb()


class Config:
    """The fields of loom::models::ModelConfig this benchmark uses, with the same presets."""

    def __init__(self, preset, vocab, d, layers, heads, kv_heads, seq):
        self.preset, self.vocab, self.d, self.layers, self.heads, self.seq = preset, vocab, d, layers, heads, seq
        self.kv_heads = kv_heads or heads
        self.head_dim = d // heads
        if preset == "llama":
            self.ffn = (8 * d // 3 + 31) // 32 * 32  # ModelConfig::llama's SwiGLU rule
            self.bias, self.tied, self.learned_pos = False, False, False
        else:
            assert self.kv_heads == heads, "gpt2 preset has no grouped-query attention"
            self.ffn = 4 * d
            self.bias, self.tied, self.learned_pos = True, True, True
        self.eps, self.rope_theta, self.std = 1e-5, 10000.0, 0.02

    def num_parameters(self):
        """ModelConfig::num_parameters (models/config.cpp), term by term."""
        C, kv = self.d, self.kv_heads * self.head_dim
        norm = 2 * C if self.preset == "gpt2" else C
        attn = 2 * C * C + 2 * C * kv + ((2 * C + 2 * kv) if self.bias else 0)
        mlp = 3 * C * self.ffn if self.preset == "llama" else 2 * C * self.ffn + self.ffn + C
        emb = self.vocab * C + (self.seq * C if self.learned_pos else 0)
        head = 0 if self.tied else self.vocab * C
        return emb + self.layers * (attn + mlp + 2 * norm) + norm + head

    def train_flops_per_token(self):
        """ModelConfig::train_flops_per_token: 6 N (N = non-embedding weights plus the LM head,
        PaLM appendix B) + 6 L T C (QK^T and PV: 12 L T C, halved by the causal mask)."""
        emb = self.vocab * self.d + (self.seq * self.d if self.learned_pos else 0)
        n = self.num_parameters() - emb + (self.vocab * self.d if self.tied else 0)
        return 6.0 * n + 6.0 * self.layers * self.seq * self.d


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        C, D, H, Hkv, F_ = c.d, c.head_dim, c.heads, c.kv_heads, c.ffn
        self.c = c
        Norm = (lambda: nn.RMSNorm(C, eps=c.eps)) if c.preset == "llama" else (lambda: nn.LayerNorm(C, eps=c.eps))
        self.input_layernorm, self.post_attention_layernorm = Norm(), Norm()
        self.q_proj = nn.Linear(C, H * D, bias=c.bias)
        self.k_proj = nn.Linear(C, Hkv * D, bias=c.bias)
        self.v_proj = nn.Linear(C, Hkv * D, bias=c.bias)
        self.o_proj = nn.Linear(H * D, C, bias=c.bias)
        if c.preset == "llama":
            self.gate_proj = nn.Linear(C, F_, bias=False)
        self.up_proj = nn.Linear(C, F_, bias=c.bias)
        self.down_proj = nn.Linear(F_, C, bias=c.bias)

    def forward(self, x, cos, sin):
        c = self.c
        B, T, C = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, c.heads, c.head_dim).transpose(1, 2)     # [B, H, T, D]
        k = self.k_proj(h).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(h).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)
        if cos is not None:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        gqa = c.kv_heads != c.heads
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        x = x + self.o_proj(a.transpose(1, 2).reshape(B, T, C))
        h = self.post_attention_layernorm(x)
        if c.preset == "llama":
            m = self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        else:
            m = self.down_proj(F.gelu(self.up_proj(h), approximate="tanh"))
        return x + m


class TransformerLM(nn.Module):
    def __init__(self, c: Config, seed=1234):
        super().__init__()
        torch.manual_seed(seed)
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab, c.d)
        self.embed_positions = nn.Embedding(c.seq, c.d) if c.learned_pos else None
        self.layers = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = nn.RMSNorm(c.d, eps=c.eps) if c.preset == "llama" else nn.LayerNorm(c.d, eps=c.eps)
        self.lm_head = nn.Linear(c.d, c.vocab, bias=False)
        if c.tied:
            self.lm_head.weight = self.embed_tokens.weight
        # Loom's init: N(0, 0.02), residual outputs N(0, 0.02 / sqrt(2 L)), biases 0, norms 1.
        out_std = c.std / math.sqrt(2 * c.layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, out_std if ("o_proj" in name or "down_proj" in name) else c.std)
        if not c.learned_pos:  # RoPE tables [T, D], Hugging Face rotate-half layout
            inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim))
            ang = torch.outer(torch.arange(c.seq, dtype=torch.float64), inv)
            ang = torch.cat((ang, ang), dim=-1)
            self.register_buffer("cos", ang.cos().float(), persistent=False)
            self.register_buffer("sin", ang.sin().float(), persistent=False)
        else:
            self.cos = self.sin = None

    def forward(self, ids):  # ids [B, T] -> logits [B, T, V]
        B, T = ids.shape
        x = self.embed_tokens(ids)
        if self.embed_positions is not None:
            x = x + self.embed_positions(torch.arange(T, device=ids.device))
        cos = self.cos[:T] if self.cos is not None else None
        sin = self.sin[:T] if self.sin is not None else None
        for blk in self.layers:
            x = blk(x, cos, sin)
        return self.lm_head(self.norm(x))


def make_optimizer(model, impl):
    """AdamW as Loom's: lr 1e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on every tensor."""
    kw = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)


# bf16 compute with f32 master weights, PyTorch's two ways (Loom's is --matmul-precision bf16).
# Both reach oneDNN's AMX kernels on CPUs that have them (ONEDNN_VERBOSE=1 shows brg_matmul:..._amx).
PRECISIONS = {
    "f32": "f32 everywhere (MKL sgemm)",
    "autocast": "torch.autocast('cpu', dtype=torch.bfloat16) around forward and loss: bf16 activations",
    "medium": "torch.set_float32_matmul_precision('medium'): f32 tensors, oneDNN matmuls in bf16",
}


def precision_context(mode):
    """Sets the mode's global switch; returns the context manager forward and loss run in."""
    if mode == "medium":
        torch.set_float32_matmul_precision("medium")
    if mode == "autocast":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def matmul_rel_err(ctx):
    """Relative error of a 256^3 product under the mode against f64: ~1e-7 in f32, ~1e-3 in bf16
    (proof that the mode is active)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g)
    with ctx():
        out = (a @ b).double()
    ref = a.double() @ b.double()
    return ((out - ref).norm() / ref.norm()).item()


def gemm_peak_flops(ctx=contextlib.nullcontext, seconds=0.3, n=512):
    """torch.mm's best rate on a square 512 product under the precision mode (what
    runtime::cpu::measured_gemm_peak_flops does at Loom's matmul precision)."""
    a, b = torch.ones(n, n), torch.full((n, n), 0.5)
    with ctx():
        torch.mm(a, b)
        best, start = 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best


def device_gemm_peak_flops(device, n=4096):
    """The GPU's best f32 rate over five 4096^3 products, TF32 off (what bench_train --device does)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize(device)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best


def batches(c, batch, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        rows = torch.randint(0, c.vocab, (batch, c.seq + 1), generator=g)
        out.append((rows[:, :-1].contiguous(), rows[:, 1:].reshape(-1).contiguous()))
    return out


SAFETENSORS_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
                      "BF16": torch.bfloat16, "F16": torch.float16, "U8": torch.uint8}


def read_safetensors(path):
    """{name: tensor} of a safetensors file (the format's 8-byte header size, JSON header, data)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size > os.path.getsize(path) - 8:
            raise ValueError(f"its header size {size} exceeds the file")
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def torch_name(loom_name):
    """This model's parameter name for a Loom (Hugging Face) one: model.layers.0.self_attn.q_proj.weight
    -> layers.0.q_proj.weight."""
    name = loom_name[len("model."):] if loom_name.startswith("model.") else loom_name
    return name.replace("self_attn.", "").replace("mlp.", "")


def load_init(model, path, device):
    """Copies bench_train --save-init's parameters into `model` (every one, shapes checked) and
    returns its four batches [(x [B, T], y [B * T])]."""
    try:
        saved = read_safetensors(path)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--load-init {path}: cannot read it as safetensors ({e})")
    own = dict(model.named_parameters())
    for name, t in saved.items():
        if name.startswith("data."):
            continue
        mine = own.pop(torch_name(name), None)
        if mine is None or mine.shape != t.shape:
            raise SystemExit(f"--load-init {path}: {name} {list(t.shape)} has no match in this model")
        with torch.no_grad():
            mine.copy_(t)
    if own:
        raise SystemExit(f"--load-init {path}: no value for {', '.join(own)}")
    return [(saved[f"data.x{i}"].to(device), saved[f"data.y{i}"].to(device)) for i in range(4)]


def probe_adamw(model, reps=5):
    """Seconds per optimizer step for each AdamW implementation (random grads, not timed in runs)."""
    res = {}
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    for impl in ("fused", "foreach", "forloop"):
        try:
            opt = make_optimizer(model, impl)
            opt.step()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                opt.step()
                ts.append(time.perf_counter() - t0)
            res[impl] = statistics.median(ts)
            del opt
        except (RuntimeError, TypeError) as e:
            res[impl] = None
            print(f"torch_model: AdamW {impl} unavailable: {e}", file=sys.stderr)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["llama", "gpt2"], default="llama")
    for k, v in (("vocab", 4096), ("d", 128), ("layers", 4), ("heads", 4), ("kv-heads", 0), ("seq", 128),
                 ("batch", 16), ("steps", 10), ("warmup", 3), ("threads", 1), ("seed", 1234)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--adamw", choices=["fused", "foreach", "forloop"], default="fused")
    ap.add_argument("--probe-adamw", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (TF32 off, like Loom's full-FP32 cuBLAS)")
    ap.add_argument("--precision", choices=list(PRECISIONS), default="f32",
                    help="; ".join(f"{k}: {v}" for k, v in PRECISIONS.items()))
    ap.add_argument("--load-init", metavar="FILE", help="start from bench_train --save-init's parameters and batches")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    c = Config(a.preset, a.vocab, a.d, a.layers, a.heads, a.kv_heads, a.seq)
    if on_gpu and a.precision != "f32":
        raise SystemExit("--precision: only f32 on a GPU here")
    amp = precision_context(a.precision)
    rel_err = matmul_rel_err(amp)
    peak = device_gemm_peak_flops(device) if on_gpu else gemm_peak_flops(amp)
    model = TransformerLM(c, a.seed).to(device)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert n_params == c.num_parameters(), f"PyTorch model has {n_params} parameters, Loom's formula {c.num_parameters()}"
    if a.probe_adamw:
        print(json.dumps({"adamw_step_s": probe_adamw(model), "params": n_params, "threads": a.threads}))
        return

    opt = make_optimizer(model, a.adamw)
    if a.load_init:
        data = load_init(model, a.load_init, device)
    else:
        data = [(x.to(device), y.to(device)) for x, y in batches(c, a.batch, a.seed)]
    step_s, losses = [], []
    for s in range(a.warmup + a.steps):
        x, y = data[s % 4]
        t0 = time.perf_counter()
        with amp():
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, c.vocab), y)
        lv = loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # as Loom's zero_grad: drop the gradient tensors
        if on_gpu:
            torch.cuda.synchronize(device)  # the step's queued kernels are part of its time
        dt = time.perf_counter() - t0
        if not math.isfinite(lv):
            raise SystemExit(f"loss is not finite at step {s}")
        losses.append(lv)
        if s >= a.warmup:
            step_s.append(dt)

    med = statistics.median(step_s)
    tokens, fpt = a.batch * a.seq, c.train_flops_per_token()
    out = {
        "framework": "pytorch", "preset": a.preset, "vocab": a.vocab, "d": a.d, "layers": a.layers,
        "heads": a.heads, "kv_heads": c.kv_heads, "ffn_hidden": c.ffn, "seq": a.seq, "batch": a.batch,
        "threads": a.threads, "torch_num_threads": torch.get_num_threads(), "adamw": a.adamw, "device": a.device,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "params": n_params,
        "warmup": a.warmup, "steps": a.steps, "step_s": [round(t, 6) for t in step_s],
        "median_step_s": med, "mean_step_s": statistics.fmean(step_s), "tokens_per_s": tokens / med,
        "flops_per_token": fpt, "achieved_gflops": fpt * tokens / med / 1e9, "gemm_peak_gflops": peak / 1e9,
        "mfu": fpt * tokens / med / peak, "peak_rss_mb": peak_rss_mb(), "rss_after_import_mb": RSS_AFTER_IMPORT_MB,
        "gemm_library": "cublas" if on_gpu else ("mkl" if torch.backends.mkl.is_available() else "other"),
        "torch_version": torch.__version__, "precision": a.precision, "matmul_rel_err": rel_err,
        "first_loss": losses[0], "last_loss": losses[-1], "losses": losses,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"pytorch {a.preset} V{a.vocab} d{a.d} L{a.layers} H{a.heads} T{a.seq} B{a.batch}, {a.threads} thread(s), "
              f"{n_params} params, AdamW {a.adamw}, precision {a.precision} (matmul rel. error {rel_err:.1e})")
        print(f"median step {med * 1e3:.1f} ms, {out['tokens_per_s']:.0f} tok/s, {out['achieved_gflops']:.2f} GFLOP/s "
              f"of {peak / 1e9:.2f} GEMM peak = MFU {100 * out['mfu']:.1f}%, peak RSS {out['peak_rss_mb']:.0f} MB, "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
