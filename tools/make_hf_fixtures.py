#!/usr/bin/env python3
"""make_hf_fixtures.py: small random Hugging Face checkpoints, saved by transformers itself,
behind Loom's import tests (tests/launch/test_hf_import.cpp).

For each model below: a random model built and saved with transformers' save_pretrained
(config.json, model.safetensors or shards + model.safetensors.index.json), a byte-level BPE
tokenizer.json trained with the `tokenizers` package using Loom's pre-tokenizer pattern, and
reference.safetensors holding `ids` [1, T] (i64), the `logits` [1, T, V] (f32) transformers
computed for them after loading the saved files in f32, and `text_ids`: how `tokenizers` encodes the text in __metadata__["text"].

  llama_gqa     LlamaForCausalLM, GQA (4 heads, 2 kv heads), vocab 320 > tokenizer's 300
                (padded), rope_theta 50000, f32, saved in shards (max_shard_size 60KB)
  llama_tied    LlamaForCausalLM, tied embeddings, attention_bias + mlp_bias, f32
  qwen2_bf16    Qwen2ForCausalLM (q/k/v biases), 1 kv head, saved in bfloat16 (logits from the
                bf16 weights computed in f32)
  gpt2_f16      GPT2LMHeadModel (Conv1D weights, fused c_attn), saved in float16

Weights are drawn wider than the default init (N(0, 0.15), norms 1 + N(0, 0.1)) so that a
wrong mapping (a transposed or permuted weight, a missing bias) moves the logits by far more
than the 1e-5 tolerance. Needs: pip install torch transformers tokenizers.

Usage: python3 tools/make_hf_fixtures.py --out tests/data/hf
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# data/tokenizer.cpp kPretokenizerPattern: Loom's chunking rule as a regex.
LOOM_PATTERN = (r" ?[A-Za-z\x{80}-\x{10FFFF}]+|[0-9]| ?[^\t\n\x{0B}\f\r A-Za-z0-9\x{80}-\x{10FFFF}]+|"
                r"[\t\n\x{0B}\f\r ]+(?![^\t\n\x{0B}\f\r ])|[\t\n\x{0B}\f\r ]+")
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Loom trains transformer language models; 12+34=46 and 7*8=56.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Pack my box with five dozen liquor jugs! Sphinx of black quartz, judge my vow.",
] * 20
TEXT = "The fox computes 25+17=42, then says:  hello world!\n"
T = 12


def make_tokenizer(vocab_size=300):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LOOM_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def save(name, model, tok, out, dtype=torch.float32, shard=None, seed=0):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    model.eval()
    if dtype != torch.float32:
        model.to(dtype)  # the saved weights are rounded; the reference uses exactly those
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, **kw)
    # The reference is what transformers computes from the saved files, loaded in f32 (the
    # in-memory model's buffers, e.g. RoPE inv_freq, were rounded by the cast above).
    model = type(model).from_pretrained(d, dtype=torch.float32)
    model.eval()
    tok.save(os.path.join(d, "tokenizer.json"))
    g = torch.Generator().manual_seed(1000 + seed)
    ids = torch.randint(0, tok.get_vocab_size(), (1, T), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float().contiguous()
    text_ids = torch.tensor(tok.encode(TEXT).ids, dtype=torch.int64)
    save_file({"ids": ids, "logits": logits, "text_ids": text_ids}, os.path.join(d, "reference.safetensors"),
              metadata={"text": TEXT, "generator": "tools/make_hf_fixtures.py"})
    print(f"{name}: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters, "
          f"files {sorted(os.listdir(d))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/hf")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = make_tokenizer()
    os.makedirs(args.out, exist_ok=True)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, rms_norm_eps=1e-6)

    m = LlamaForCausalLM(LlamaConfig(vocab_size=320, num_key_value_heads=2, rope_theta=50000.0,
                                     bos_token_id=0, eos_token_id=1, **common))
    randomize(m, 1)
    save("llama_gqa", m, tok, args.out, shard="60KB", seed=1)

    m = LlamaForCausalLM(LlamaConfig(vocab_size=300, num_key_value_heads=4, tie_word_embeddings=True,
                                     attention_bias=True, mlp_bias=True, **common))
    randomize(m, 2)
    save("llama_tied", m, tok, args.out, seed=2)

    m = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, num_key_value_heads=1, rope_theta=1e6, **common))
    randomize(m, 3)
    save("qwen2_bf16", m, tok, args.out, dtype=torch.bfloat16, seed=3)

    m = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                   activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                   bos_token_id=0, eos_token_id=1))
    randomize(m, 4)
    save("gpt2_f16", m, tok, args.out, dtype=torch.float16, seed=4)


if __name__ == "__main__":
    main()
