#!/usr/bin/env python3
"""make_golden.py: the PyTorch reference behind Loom's golden tests (tests/runtime/test_golden.cpp,
tests/models/test_model_golden.cpp).

Writes, with a small pure-Python safetensors writer (no `safetensors` needed; only the GPT-2 files
need `transformers`):
  llama_block_f32.safetensors, llama_block_f64.safetensors
      One Llama decoder block written out here exactly as Hugging Face LlamaDecoderLayer computes
      it: input RMSNorm, q/k/v projections (no bias), grouped-query attention with rotate-half
      RoPE at explicit position ids (which repeat and jump, different per batch row), causal
      softmax, o_proj, residual, post-attention RMSNorm, SwiGLU MLP down(silu(gate(x)) * up(x)),
      residual. Loss = sum(out * R) for a fixed random R. Stored: the input `x`, `position_ids`
      (i64), `R`, every weight under its HF name, a few activations (`act.*`), the output `out`,
      `loss`, and the gradient of the input and of every weight (`grad.<name>`).
  cross_entropy_f32.safetensors, cross_entropy_f64.safetensors
      logits [N, V], targets with ignore_index -100, mean reduction, label_smoothing 0 and 0.1:
      `loss.ls<s>` and `grad.logits.ls<s>`.
  ops_f32.safetensors, ops_f64.safetensors
      Every case of tests/runtime/op_cases.h (the op table the finite-difference test runs) but
      dropout, by name: inputs `<case>.in<i>`, a random `<case>.R`, the output `<case>.out`
      and the gradient of sum(out * R) for each input, `<case>.grad<i>`.
  llama_model_f32.safetensors, llama_model_f64.safetensors, llama_model_tied_f32.safetensors
      A whole small Llama as HF LlamaForCausalLM computes it (the block above, stacked, at the
      default positions 0..T-1; final RMSNorm; lm_head, or the embedding with tied embeddings),
      with mean cross-entropy (ignore_index -100) on fixed ids/targets; then ten
      torch.optim.AdamW steps on that batch, weight decay on the 2-D weights except the
      embedding (lm_head decays; norms and embedding do not). Stored: `ids`, `targets` (i64),
      the initial weights under Loom's HF names, `logits`, `loss`, `grad.<name>` for every
      parameter, `train.losses` (the loss before each step) and `final.<name>` (the weights
      after the ten steps). The config and hyper-parameters are in `__metadata__`.
  gpt2_model_f32.safetensors, gpt2_model_f64.safetensors
      The same for a small GPT-2, computed by Hugging Face transformers' own GPT2LMHeadModel
      (eager attention, no dropout, tied head): LayerNorm with bias, learned positions, fused
      c_attn split into Loom's q/k/v, GELU (tanh, "gelu_new"), a bias on every projection.
      Weights are stored under Loom's names (Conv1D weights transposed); AdamW decays the 2-D
      weights except the token and position embeddings. Needs `pip install transformers`.

Shapes (one alphabet): B batch, T time, C channels, H heads, Hkv key/value heads, D head dim,
F ffn hidden, N rows, V vocab.

Precision: Hugging Face upcasts RMSNorm and softmax to f32 and builds the RoPE angles in f32
whatever the model dtype. The f32 files follow it exactly; the f64 files do every step in f64
(an f32 step would cap agreement at ~1e-7, far above the 1e-10 the f64 test checks).

Usage: python3 tools/make_golden.py --out tests/data/golden           (every file)
       python3 tools/make_golden.py --out tests/data/golden --model   (only the whole-model files)
The run is deterministic (fixed seeds, one thread, deterministic algorithms); rerunning with
the same PyTorch version reproduces the files byte for byte.
"""
import argparse
import json
import os
import struct

import torch

# ---- config ----------------------------------------------------------------------------------
B, T = 2, 8
C, H, HKV, D, F = 64, 4, 2, 16, 96
EPS = 1e-6
THETA = 10000.0
# Explicit positions: repeats (2, 3 twice) and jumps (4 -> 9), different per row.
POSITION_IDS = [[0, 1, 2, 3, 2, 3, 4, 9],
                [5, 6, 7, 0, 1, 2, 11, 12]]
CE_N, CE_V = 12, 37
CE_IGNORE = -100
CE_SMOOTHING = [0.0, 0.1]
SEED = 1234
# Whole model (llama_model_*): a small Llama, ten AdamW steps on one fixed batch. D = 24 / 4 = 6
# (three RoPE frequencies, rotate-half pairs (i, i + 3)); H / Hkv = 2 query heads per kv head.
# Small enough that initial weights, gradients and final weights fit in < 300 KB in f64.
MODEL = {"vocab_size": 61, "d_model": 24, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 32,
         "norm_eps": 1e-5, "rope_theta": 10000.0, "init_std": 0.02}
MODEL_B, MODEL_T = 2, 7
MODEL_IGNORE = -100
MODEL_IGNORED = [(0, 2), (1, 5)]  # (b, t) whose target is ignore_index
ADAMW_LR, ADAMW_BETAS, ADAMW_EPS, ADAMW_WD = 1e-2, (0.9, 0.95), 1e-8, 0.1
# GPT-2 model (gpt2_model_*): same sizes and batch; position table of max_seq_len 8 >= T.
GPT2 = {"vocab_size": 61, "d_model": 24, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ffn_hidden": 96,
        "norm_eps": 1e-5, "init_std": 0.1, "max_seq_len": 8, "tie_embeddings": True}
TRAIN_STEPS = 10

# ---- a minimal safetensors writer ------------------------------------------------------------
ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16", torch.float16: "F16",
             torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL"}


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: write the raw 16-bit patterns
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # numpy arrays are little-endian on every platform we build on


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) written in order, contiguous without holes.
    Header: compact JSON, __metadata__ first (keys sorted), padded with spaces so that 8 + len is a
    multiple of 8: the same bytes as Loom's write_safetensors (test_safetensors.cpp checks it)."""
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name, t in tensors:
        assert name not in header, f"duplicate tensor name {name}"
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return os.path.getsize(path)


# ---- the Llama block, as HF LlamaDecoderLayer ------------------------------------------------
def rms_norm(x, w, f32_upcast, eps=EPS):
    # HF LlamaRMSNorm: w * (x * rsqrt(mean(x^2) + eps)), the normalisation in f32.
    dt = x.dtype
    h = x.to(torch.float32) if f32_upcast else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dt)


def rope_cos_sin(position_ids, dtype, f32_angles, D=D, theta=THETA):
    # HF LlamaRotaryEmbedding: inv_freq_i = theta^(-2i/D); emb = cat(freqs, freqs).
    adt = torch.float32 if f32_angles else dtype
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).to(adt) / D))  # [D/2]
    freqs = position_ids.to(adt)[:, :, None] * inv_freq[None, None, :]  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [B, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_block(x, w, position_ids, hf_precision, H=H, HKV=HKV, eps=EPS, theta=THETA):
    """x [B, T, C] -> out [B, T, C], plus activations for debugging. w: the layer's weights under
    their HF names relative to the layer (`self_attn.q_proj.weight`, ...); D = C / H."""
    B, T, C = x.shape
    D = C // H
    act = {}
    residual = x
    h = rms_norm(x, w["input_layernorm.weight"], hf_precision, eps)
    q = (h @ w["self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
    k = (h @ w["self_attn.k_proj.weight"].T).view(B, T, HKV, D).transpose(1, 2)  # [B, Hkv, T, D]
    v = (h @ w["self_attn.v_proj.weight"].T).view(B, T, HKV, D).transpose(1, 2)
    cos, sin = rope_cos_sin(position_ids, x.dtype, hf_precision, D, theta)
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    act["act.q_rope"] = q.transpose(1, 2)  # [B, T, H, D]
    act["act.k_rope"] = k.transpose(1, 2)  # [B, T, Hkv, D]
    # repeat_kv: query head h reads key/value head h // (H / Hkv).
    k = k.repeat_interleave(H // HKV, dim=1)
    v = v.repeat_interleave(H // HKV, dim=1)
    scores = (q @ k.transpose(2, 3)) * D**-0.5  # [B, H, T, T], HF: * self.scaling
    # HF's causal mask follows the token index (cache_position), not position_ids.
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(x.dtype) if hf_precision else torch.softmax(scores, dim=-1)
    attn = (p @ v).transpose(1, 2).contiguous()  # [B, T, H, D]
    act["act.attn"] = attn
    h = residual + attn.reshape(B, T, C) @ w["self_attn.o_proj.weight"].T
    act["act.h"] = h
    residual = h
    h = rms_norm(h, w["post_attention_layernorm.weight"], hf_precision, eps)
    gate = h @ w["mlp.gate_proj.weight"].T
    up = h @ w["mlp.up_proj.weight"].T
    out = residual + (torch.nn.functional.silu(gate) * up) @ w["mlp.down_proj.weight"].T
    return out, act


def make_llama(dtype, out_dir, gen_seed):
    g = torch.Generator().manual_seed(gen_seed)
    # Drawn in f64 so that the f32 and f64 files hold the same problem (f32 = rounded f64).
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x = randn(B, T, C)
    shapes = [("input_layernorm.weight", (C,)), ("self_attn.q_proj.weight", (H * D, C)),
              ("self_attn.k_proj.weight", (HKV * D, C)), ("self_attn.v_proj.weight", (HKV * D, C)),
              ("self_attn.o_proj.weight", (C, H * D)), ("post_attention_layernorm.weight", (C,)),
              ("mlp.gate_proj.weight", (F, C)), ("mlp.up_proj.weight", (F, C)), ("mlp.down_proj.weight", (C, F))]
    w = {}
    for name, shape in shapes:
        if len(shape) == 1:
            w[name] = 1.0 + 0.1 * randn(*shape)  # norm gains near 1 but not 1
        else:
            w[name] = randn(*shape) / shape[1] ** 0.5  # unit-scale activations
    R = randn(B, T, C)
    position_ids = torch.tensor(POSITION_IDS, dtype=torch.int64)

    x = x.to(dtype).requires_grad_(True)
    w = {k: v.to(dtype).requires_grad_(True) for k, v in w.items()}
    R = R.to(dtype)
    out, act = llama_block(x, w, position_ids, hf_precision=(dtype == torch.float32))
    loss = (out * R).sum()
    loss.backward()

    tensors = [("x", x), ("position_ids", position_ids), ("R", R)]
    tensors += [(k, v) for k, v in w.items()]
    tensors += [(k, v) for k, v in act.items()]
    tensors += [("out", out), ("loss", loss), ("grad.x", x.grad)]
    tensors += [("grad." + k, v.grad) for k, v in w.items()]
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    meta = {"generator": "tools/make_golden.py", "torch_version": torch.__version__, "case": "llama_block",
            "dtype": suffix, "B": str(B), "T": str(T), "C": str(C), "H": str(H), "Hkv": str(HKV), "D": str(D),
            "F": str(F), "rms_norm_eps": repr(EPS), "rope_theta": repr(THETA), "seed": str(gen_seed)}
    path = os.path.join(out_dir, f"llama_block_{suffix}.safetensors")
    size = write_safetensors(path, [(k, v.detach()) for k, v in tensors], meta)
    print(f"{path}: {size} bytes, loss {loss.item():.10g}")


def make_cross_entropy(dtype, out_dir, gen_seed):
    g = torch.Generator().manual_seed(gen_seed)
    logits = (2.0 * torch.randn(CE_N, CE_V, generator=g, dtype=torch.float64)).to(dtype)  # [N, V]
    target = torch.randint(0, CE_V, (CE_N,), generator=g, dtype=torch.int64)  # [N]
    target[[2, 7, 8]] = CE_IGNORE
    tensors = [("logits", logits), ("target", target)]
    for s in CE_SMOOTHING:
        lg = logits.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(lg, target, ignore_index=CE_IGNORE, label_smoothing=s,
                                                 reduction="mean")
        loss.backward()
        tensors += [(f"loss.ls{s}", loss.detach()), (f"grad.logits.ls{s}", lg.grad)]
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    meta = {"generator": "tools/make_golden.py", "torch_version": torch.__version__, "case": "cross_entropy",
            "dtype": suffix, "N": str(CE_N), "V": str(CE_V), "ignore_index": str(CE_IGNORE),
            "label_smoothing": ",".join(str(s) for s in CE_SMOOTHING), "reduction": "mean", "seed": str(gen_seed)}
    path = os.path.join(out_dir, f"cross_entropy_{suffix}.safetensors")
    size = write_safetensors(path, tensors, meta)
    print(f"{path}: {size} bytes")


# ---- the op table of tests/runtime/op_cases.h ----------------------------------------------------
def _attention(q, k, v, visible):
    """q [B, Tq, H, D], k/v [B, Tk, Hkv, D], visible bool [B, Tq, Tk] -> out [B, Tq, H, D],
    lse [B, H, Tq]: softmax(q k^T / sqrt(D)) v over the visible keys, kv heads shared by
    H / Hkv query heads each."""
    B, Tq, H, D = q.shape
    group = H // k.shape[2]
    kk = k.repeat_interleave(group, dim=2)  # [B, Tk, H, D]
    vv = v.repeat_interleave(group, dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q, kk) / (D ** 0.5)  # [B, H, Tq, Tk]
    s = s.masked_fill(~visible[:, None, :, :], float("-inf"))
    out = torch.einsum("bhij,bjhd->bihd", torch.softmax(s, dim=-1), vv)
    return out, torch.logsumexp(s, dim=-1)


def _causal(B, Tq, Tk, q_offset=0):
    i = torch.arange(Tq)[:, None] + q_offset
    return (torch.arange(Tk)[None, :] <= i).expand(B, Tq, Tk)


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, pos, theta):
    cos, sin = rope_cos_sin(pos, x.dtype, x.dtype == torch.float32, D=x.shape[-1], theta=theta)  # [B, T, D]
    return x * cos[:, :, None, :] + rotate_half(x) * sin[:, :, None, :]


def op_cases():
    """name -> (input specs, f): the cases of tests/runtime/op_cases.h by name, with the same
    constants. A spec is (shape, kind): "n" draws N(0, 1), "p" |N(0, 1)| + 0.5 (positive).
    dropout is not here: its mask comes from Loom's own Philox stream."""
    F = torch.nn.functional
    L = lambda *v: torch.tensor(v, dtype=torch.int64)
    n = lambda *s: (s, "n")
    pos = lambda *s: (s, "p")
    ce_smooth = dict(label_smoothing=0.1, reduction="none", ignore_index=-100)
    seg = torch.tensor([0, 0, 1, 1, 1, 2])
    return {
        "add_broadcast": ([n(3, 4), n(4)], lambda a, b: a + b),
        "sub_broadcast": ([n(2, 1, 3), n(4, 1)], lambda a, b: a - b),
        "mul_broadcast": ([n(3, 4), n(3, 1)], lambda a, b: a * b),
        "div": ([n(3, 4), pos(4)], lambda a, b: a / b),
        "maximum": ([n(3, 4), n(3, 4)], torch.maximum),
        "minimum": ([n(3, 4), n(4)], torch.minimum),
        "where": ([n(3, 4), n(4)], lambda a, b: torch.where(a > b, a, b)),
        "masked_fill": ([n(3, 4)], lambda x: x.masked_fill(torch.tensor([1, 0, 0, 1], dtype=torch.bool), -3.0)),
        "mul_transposed": ([n(4, 3), n(3, 4)], lambda a, b: a.T * b),
        "add_scalar": ([n(5)], lambda x: x + 2.0),
        "mul_scalar": ([n(5)], lambda x: x * -1.5),
        "pow_scalar": ([n(5)], lambda x: x.pow(3.0)),
        "neg": ([n(5)], torch.neg),
        "exp": ([n(2, 3)], torch.exp),
        "log": ([pos(2, 3)], torch.log),
        "sqrt": ([pos(2, 3)], torch.sqrt),
        "rsqrt": ([pos(2, 3)], torch.rsqrt),
        "tanh": ([n(2, 3)], torch.tanh),
        "sigmoid": ([n(2, 3)], torch.sigmoid),
        "relu": ([n(2, 3)], torch.relu),
        "abs": ([n(2, 3)], torch.abs),
        "gelu_tanh": ([n(2, 3)], lambda x: F.gelu(x, approximate="tanh")),
        "gelu_erf": ([n(2, 3)], F.gelu),
        "silu": ([n(2, 3)], F.silu),
        "swiglu": ([n(3, 5), n(3, 5)], lambda g, u: F.silu(g) * u),
        "silu_strided": ([n(3, 2)], lambda x: F.silu(x.T)),
        "sum_dim0": ([n(3, 4, 2)], lambda x: x.sum(0)),
        "sum_dims_keep": ([n(3, 4, 2)], lambda x: x.sum((0, 2), keepdim=True)),
        "sum_all": ([n(3, 4)], lambda x: x.sum()),
        "mean_last": ([n(3, 4)], lambda x: x.mean(-1)),
        "max_dim1": ([n(3, 5)], lambda x: x.max(1).values),
        "max_dim0_keep": ([n(3, 5)], lambda x: x.max(0, keepdim=True).values),
        "matmul": ([n(3, 4), n(4, 5)], torch.matmul),
        "matmul_batched_broadcast": ([n(2, 3, 4), n(4, 2)], torch.matmul),
        "matmul_transposed": ([n(4, 3), n(5, 4)], lambda a, b: a.T @ b.T),
        "matmul_vec": ([n(3, 4), n(4)], torch.matmul),
        "linear_bias": ([n(2, 3, 4), n(5, 4), n(5)], F.linear),
        "view_reshape": ([n(3, 4)], lambda x: x.reshape(4, 3) * x.reshape(4, 3)),
        "permute": ([n(2, 3, 4)], lambda x: x.permute(2, 0, 1)),
        "narrow": ([n(3, 4)], lambda x: x.narrow(1, 1, 2)),
        "expand": ([n(3, 1)], lambda x: x.expand(2, 3, 4)),
        "unsqueeze_squeeze": ([n(3, 4)], lambda x: x.unsqueeze(1).squeeze(1)),
        "concat": ([n(2, 3), n(2, 2)], lambda a, b: torch.cat([a, b], 1)),
        "split": ([n(2, 4)], lambda x: x.split([1, 3], 1)[0] * x.split([1, 3], 1)[1]),
        "cast_roundtrip": ([n(3)], lambda x: x.float().double()),
        "softmax": ([n(3, 5)], lambda x: torch.softmax(x, -1)),
        "softmax_dim0": ([n(3, 5)], lambda x: torch.softmax(x, 0)),
        "log_softmax": ([n(3, 5)], lambda x: torch.log_softmax(x, -1)),
        "cross_entropy_mean": ([n(4, 6)], lambda x: F.cross_entropy(x, L(1, -100, 4, 0))),
        "cross_entropy_smooth_none": ([n(2, 3, 6)], lambda x: F.cross_entropy(
            x.reshape(-1, 6), L(1, 2, 5, 0, 3, 3), **ce_smooth).reshape(2, 3)),
        "linear_cross_entropy_mean": ([n(4, 3), n(6, 3)], lambda x, w: F.cross_entropy(x @ w.T, L(1, -100, 4, 0))),
        "linear_cross_entropy_smooth_none": ([n(2, 3, 4), n(6, 4)], lambda x, w: F.cross_entropy(
            (x @ w.T).reshape(-1, 6), L(1, 2, -100, 0, 3, 5), **ce_smooth).reshape(2, 3)),
        "embedding": ([n(5, 4)], lambda w: F.embedding(L(1, 3, 1, 0, 4, 1).reshape(2, 3), w)),
        "layer_norm": ([n(3, 6), n(6), n(6)], lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5)),
        "rms_norm": ([n(2, 3, 6), n(6)], lambda x, w: _rms(x, w, 1e-6)),
        "rms_norm_strided": ([n(6, 3), n(6)], lambda x, w: _rms(x.T, w, 1e-6)),
        "rope_repeating_positions": ([n(2, 4, 3, 6)], lambda x: _rope(x, L(0, 1, 2, 2, 7, 3, 3, 3).reshape(2, 4),
                                                                      10000.0)),
        "index_select_dup": ([n(2, 4, 3)], lambda x: x.index_select(1, L(2, 0, 2))),
        "gather": ([n(2, 4)], lambda x: x.gather(1, L(0, 2, 2, 1, 0, 0).reshape(2, 3))),
        "scatter_add": ([n(2, 3), n(2, 3)], lambda x, s: x.scatter_add(1, L(0, 2, 2, 1, 0, 0).reshape(2, 3), s)),
        "attention_causal_gqa": ([n(2, 5, 4, 3), n(2, 5, 2, 3), n(2, 5, 2, 3)],
                                 lambda q, k, v: _attention(q, k, v, _causal(2, 5, 5))[0]),
        "attention_query_offset": ([n(1, 3, 2, 4), n(1, 6, 2, 4), n(1, 6, 2, 4)],
                                   lambda q, k, v: _attention(q, k, v, _causal(1, 3, 6, q_offset=3))[0]),
        "attention_dense_mask": ([n(2, 4, 2, 3)] * 3, lambda q, k, v: _attention(q, k, v, torch.tensor(
            [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0],
            dtype=torch.bool).reshape(2, 4, 4))[0]),
        "attention_packed_documents": ([n(1, 6, 2, 3)] * 3, lambda q, k, v: _attention(
            q, k, v, _causal(1, 6, 6) & (seg[:, None] == seg[None, :])[None])[0]),
        "attention_lse": ([n(1, 4, 2, 3)] * 3, lambda q, k, v: torch.cat(
            [t.reshape(-1) for t in _attention(q, k, v, _causal(1, 4, 4))])),
    }


def make_ops(dtype, out_dir, gen_seed):
    """ops_<dtype>.safetensors: per case `<case>.in<i>` (inputs), `<case>.R`, `<case>.out` and
    `<case>.grad<i>`, the gradient of sum(out * R) for each input."""
    g = torch.Generator().manual_seed(gen_seed)
    tensors, names = [], []
    for name, (specs, f) in op_cases().items():
        inputs = []
        for shape, kind in specs:
            r = torch.randn(*shape, generator=g, dtype=torch.float64)
            inputs.append((r.abs() + 0.5 if kind == "p" else r).to(dtype).requires_grad_(True))
        out = f(*inputs)
        R = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
        grads = torch.autograd.grad((out * R).sum(), inputs)
        tensors += [(f"{name}.in{i}", x.detach()) for i, x in enumerate(inputs)]
        tensors += [(f"{name}.R", R), (f"{name}.out", out.detach())]
        tensors += [(f"{name}.grad{i}", gi) for i, gi in enumerate(grads)]
        names.append(name)
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    meta = {"generator": "tools/make_golden.py", "torch_version": torch.__version__, "case": "ops", "dtype": suffix,
            "seed": str(gen_seed), "cases": ",".join(names)}
    path = os.path.join(out_dir, f"ops_{suffix}.safetensors")
    print(f"{path}: {write_safetensors(path, tensors, meta)} bytes, {len(names)} cases")


# ---- the whole model, as HF LlamaForCausalLM, and ten AdamW steps -----------------------------
def model_param_shapes(cfg):
    """(HF name, shape) of every parameter, in Loom's registration order."""
    V, C, F, H, HKV = cfg["vocab_size"], cfg["d_model"], cfg["ffn_hidden"], cfg["n_heads"], cfg["n_kv_heads"]
    D = C // H
    shapes = [("model.embed_tokens.weight", (V, C))]
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (C,)), (p + "self_attn.q_proj.weight", (H * D, C)),
                   (p + "self_attn.k_proj.weight", (HKV * D, C)), (p + "self_attn.v_proj.weight", (HKV * D, C)),
                   (p + "self_attn.o_proj.weight", (C, H * D)), (p + "post_attention_layernorm.weight", (C,)),
                   (p + "mlp.gate_proj.weight", (F, C)), (p + "mlp.up_proj.weight", (F, C)),
                   (p + "mlp.down_proj.weight", (C, F))]
    shapes.append(("model.norm.weight", (C,)))
    if not cfg["tie_embeddings"]:
        shapes.append(("lm_head.weight", (V, C)))
    return shapes


def no_decay(name, shape):
    # Norm gains (1-D) and the embedding take no weight decay; every other matrix, lm_head
    # included, does. (With tied embeddings the shared matrix is the embedding: no decay.)
    return len(shape) < 2 or name == "model.embed_tokens.weight"


def llama_model(ids, w, cfg, hf_precision):
    """HF LlamaForCausalLM.forward: ids [B, T] i64 -> logits [B, T, V], positions 0..T-1 (HF's
    default position_ids = cache_position), causal attention, untied or tied lm_head."""
    B, T = ids.shape
    position_ids = torch.arange(T, dtype=torch.int64)[None, :].expand(B, T)  # [B, T]
    x = torch.nn.functional.embedding(ids, w["model.embed_tokens.weight"])  # [B, T, C]
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        layer = {k[len(p):]: v for k, v in w.items() if k.startswith(p)}
        x, _ = llama_block(x, layer, position_ids, hf_precision, H=cfg["n_heads"], HKV=cfg["n_kv_heads"],
                           eps=cfg["norm_eps"], theta=cfg["rope_theta"])
    x = rms_norm(x, w["model.norm.weight"], hf_precision, cfg["norm_eps"])
    head = w["model.embed_tokens.weight"] if cfg["tie_embeddings"] else w["lm_head.weight"]
    return x @ head.T  # [B, T, V]


def draw_model_inputs(shapes, cfg, gen_seed, one_d):
    """The initial weights, drawn in f64 (an f32 file rounds them): matrices and embeddings
    N(0, init_std^2), each 1-D tensor one_d(name, r) of its N(0, 1) draw r; then one batch of ids
    and targets [B, T], the targets at MODEL_IGNORED set to MODEL_IGNORE."""
    g = torch.Generator().manual_seed(gen_seed)
    init = {}
    for name, shape in shapes:
        r = torch.randn(*shape, generator=g, dtype=torch.float64)
        init[name] = one_d(name, r) if len(shape) == 1 else cfg["init_std"] * r
    V = cfg["vocab_size"]
    ids = torch.randint(0, V, (MODEL_B, MODEL_T), generator=g, dtype=torch.int64)  # [B, T]
    targets = torch.randint(0, V, (MODEL_B, MODEL_T), generator=g, dtype=torch.int64)  # [B, T]
    for b, t in MODEL_IGNORED:
        targets[b, t] = MODEL_IGNORE
    return init, ids, targets


def make_model(dtype, tied, out_dir, gen_seed):
    cfg = dict(MODEL, tie_embeddings=tied)
    shapes = model_param_shapes(cfg)
    # Norm gains 1 + 0.1 N(0, 1), so that their gradients matter.
    init, ids, targets = draw_model_inputs(shapes, cfg, gen_seed, lambda name, r: 1.0 + 0.1 * r)

    name = "llama_model_tied_{}" if tied else "llama_model_{}"
    train_and_write(lambda w: llama_model(ids, w, cfg, dtype == torch.float32), init, shapes, no_decay, ids, targets,
                    dtype, "llama_model", cfg, name, out_dir, gen_seed)


def train_and_write(forward, init, shapes, is_no_decay, ids, targets, dtype, case, cfg, name, out_dir, gen_seed):
    """Step 0's logits, loss and gradients, then TRAIN_STEPS torch.optim.AdamW steps from `init`
    (forward(w) -> logits [B, T, V] for the weight dict w), written with the config."""
    V = cfg["vocab_size"]
    # clone: .to() returns the same tensor when the dtype already matches, and AdamW updates w in place.
    w = {k: v.to(dtype).clone().requires_grad_(True) for k, v in init.items()}
    decay = [w[n] for n, s in shapes if not is_no_decay(n, s)]
    skip = [w[n] for n, s in shapes if is_no_decay(n, s)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW_WD}, {"params": skip, "weight_decay": 0.0}],
                            lr=ADAMW_LR, betas=ADAMW_BETAS, eps=ADAMW_EPS, foreach=False, fused=False)
    losses = []
    for step in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        logits = forward(w)  # [B, T, V]
        # HF's loss: logits upcast to f32 (a no-op here), mean over targets != -100.
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                                                 ignore_index=MODEL_IGNORE, reduction="mean")
        loss.backward()
        if step == 0:
            first = [("logits", logits.detach().clone()), ("loss", loss.detach().clone())]
            first += [("grad." + n, w[n].grad.clone()) for n, _ in shapes]
        losses.append(loss.detach().clone())
        opt.step()

    tensors = [("ids", ids), ("targets", targets)]
    tensors += [(n, init[n].to(dtype)) for n, _ in shapes]
    tensors += first
    tensors += [("train.losses", torch.stack(losses))]
    tensors += [("final." + n, w[n].detach()) for n, _ in shapes]
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    meta = {"generator": "tools/make_golden.py", "torch_version": torch.__version__, "case": case,
            "dtype": suffix, "B": str(MODEL_B), "T": str(MODEL_T), "seed": str(gen_seed),
            "ignore_index": str(MODEL_IGNORE), "reduction": "mean", "steps": str(TRAIN_STEPS),
            "lr": repr(ADAMW_LR), "beta1": repr(ADAMW_BETAS[0]), "beta2": repr(ADAMW_BETAS[1]),
            "adam_eps": repr(ADAMW_EPS), "weight_decay": repr(ADAMW_WD),
            "no_decay": ",".join(n for n, s in shapes if is_no_decay(n, s))}
    for k, v in cfg.items():
        meta[k] = ("true" if v else "false") if isinstance(v, bool) else (v if isinstance(v, str) else repr(v))
    path = os.path.join(out_dir, name.format(suffix) + ".safetensors")
    size = write_safetensors(path, tensors, meta)
    print(f"{path}: {size} bytes, losses " + " ".join(f"{l.item():.6f}" for l in losses))


# ---- a small GPT-2, as transformers' GPT2LMHeadModel ------------------------------------------
def gpt2_param_shapes(cfg):
    """(Loom name, shape) of every parameter, in Loom's registration order (tied head)."""
    V, C, F, P = cfg["vocab_size"], cfg["d_model"], cfg["ffn_hidden"], cfg["max_seq_len"]
    shapes = [("model.embed_tokens.weight", (V, C)), ("model.embed_positions.weight", (P, C))]
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (C,)), (p + "input_layernorm.bias", (C,))]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes += [(p + f"self_attn.{proj}.weight", (C, C)), (p + f"self_attn.{proj}.bias", (C,))]
        shapes += [(p + "post_attention_layernorm.weight", (C,)), (p + "post_attention_layernorm.bias", (C,)),
                   (p + "mlp.up_proj.weight", (F, C)), (p + "mlp.up_proj.bias", (F,)),
                   (p + "mlp.down_proj.weight", (C, F)), (p + "mlp.down_proj.bias", (C,))]
    shapes += [("model.norm.weight", (C,)), ("model.norm.bias", (C,))]
    return shapes


def gpt2_no_decay(name, shape):
    # Loom's rule: norms and biases (1-D) and both embeddings take no weight decay.
    return len(shape) < 2 or name in ("model.embed_tokens.weight", "model.embed_positions.weight")


def gpt2_hf_state(w, cfg):
    """Loom-named weights -> a GPT2LMHeadModel state dict, differentiably (Conv1D stores [in, out]:
    c_attn's columns are q | k | v)."""
    sd = {"transformer.wte.weight": w["model.embed_tokens.weight"],
          "transformer.wpe.weight": w["model.embed_positions.weight"],
          "transformer.ln_f.weight": w["model.norm.weight"], "transformer.ln_f.bias": w["model.norm.bias"]}
    for l in range(cfg["n_layers"]):
        p, h = f"model.layers.{l}.", f"transformer.h.{l}."
        sa = p + "self_attn."
        sd[h + "ln_1.weight"], sd[h + "ln_1.bias"] = w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"]
        sd[h + "attn.c_attn.weight"] = torch.cat([w[sa + f"{x}_proj.weight"] for x in "qkv"], 0).T
        sd[h + "attn.c_attn.bias"] = torch.cat([w[sa + f"{x}_proj.bias"] for x in "qkv"], 0)
        sd[h + "attn.c_proj.weight"], sd[h + "attn.c_proj.bias"] = w[sa + "o_proj.weight"].T, w[sa + "o_proj.bias"]
        sd[h + "ln_2.weight"] = w[p + "post_attention_layernorm.weight"]
        sd[h + "ln_2.bias"] = w[p + "post_attention_layernorm.bias"]
        sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_fc.bias"] = w[p + "mlp.up_proj.weight"].T, w[p + "mlp.up_proj.bias"]
        sd[h + "mlp.c_proj.weight"] = w[p + "mlp.down_proj.weight"].T
        sd[h + "mlp.c_proj.bias"] = w[p + "mlp.down_proj.bias"]
    return sd


def make_gpt2_model(dtype, out_dir, gen_seed):
    from transformers import GPT2Config, GPT2LMHeadModel  # only this file needs transformers
    cfg = dict(GPT2, preset="gpt2")
    V = cfg["vocab_size"]
    shapes = gpt2_param_shapes(cfg)
    # LayerNorm gains 1 + 0.1 N(0, 1); LayerNorm and projection biases 0.1 N(0, 1), so that
    # every bias changes the logits.
    init, ids, targets = draw_model_inputs(
        shapes, cfg, gen_seed, lambda name, r: 1.0 + 0.1 * r if name.endswith(".weight") else 0.1 * r)

    hf_cfg = GPT2Config(vocab_size=V, n_positions=cfg["max_seq_len"], n_embd=cfg["d_model"],
                        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], n_inner=cfg["ffn_hidden"],
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        layer_norm_epsilon=cfg["norm_eps"], tie_word_embeddings=True,
                        bos_token_id=V - 1, eos_token_id=V - 1)  # the defaults (50256) lie outside V
    hf_cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(hf_cfg).to(dtype).eval()  # eval: no dropout (all p = 0 anyway)

    def forward(w):
        return torch.func.functional_call(model, gpt2_hf_state(w, cfg), (ids,), tie_weights=True).logits

    train_and_write(forward, init, shapes, gpt2_no_decay, ids, targets, dtype, "gpt2_model", cfg,
                    "gpt2_model_{}", out_dir, gen_seed)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/golden", help="output directory")
    ap.add_argument("--seed", type=int, default=SEED, help="base seed (the committed files use the default)")
    ap.add_argument("--model", action="store_true", help="write only the whole-model files (llama_model_*, gpt2_model_*)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if not args.model:
        for dtype in (torch.float32, torch.float64):
            make_llama(dtype, args.out, args.seed)
            make_cross_entropy(dtype, args.out, args.seed + 1)
            make_ops(dtype, args.out, args.seed + 4)
    for dtype in (torch.float32, torch.float64):
        make_model(dtype, False, args.out, args.seed + 2)
    make_model(torch.float32, True, args.out, args.seed + 2)
    for dtype in (torch.float32, torch.float64):
        make_gpt2_model(dtype, args.out, args.seed + 3)


if __name__ == "__main__":
    main()
