#!/usr/bin/env python3
"""check_export_live.py: Loom's exports against the real consumers.

Trains small models briefly with the built `loom` (a Llama-style one with grouped-query
attention and a padded vocabulary, a Qwen2-style one with q/k/v biases and tied embeddings,
a Llama-style one with biases everywhere and tied embeddings, and a GPT-2-style one), exports them (`loom export --format hf|gguf`), loads the exports in
Hugging Face transformers and (GGUF) in llama.cpp through llama-cpp-python, and compares with
Loom (`loom score`): next-token log-probabilities at every position of a prompt (max abs
difference; f32 must be within 1e-4), the greedy continuation, and the prompt's token ids.

Needs: pip install torch transformers llama-cpp-python (llama.cpp is skipped, and said so,
when llama_cpp cannot be imported). Not run by CI.

    python3 tools/check_export_live.py --loom build/loom [--out bench/results/export_live.json]
Exit status 0 when every check passed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

PROMPT = "12+34=46\n7+8=15\n25+17="
TOL = 1e-4

CONFIGS = {
    # name: (yaml model section, extra)
    "llama_gqa": "model: {d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, vocab_size: 272}",
    "qwen2_tied": "model: {d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 1, qkv_bias: true, tie_embeddings: true, rope_theta: 500000.0}",
    "llama_bias_tied": "model: {d_model: 64, n_layers: 2, n_heads: 4, bias: true, tie_embeddings: true}",
    "gpt2": "model: {preset: gpt2, d_model: 64, n_layers: 2, n_heads: 4, max_seq_len: 64}",
}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def loom_score(loom, ckpt, prompt, greedy):
    return json.loads(run([loom, "score", "--ckpt", ckpt, "--prompt", prompt, "--greedy", str(greedy)]))


def check_transformers(hf_dir, ref, greedy):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = ref["ids"]
    hf_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
        out = model.generate(torch.tensor([ids]), max_new_tokens=greedy, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[0, len(ids):].tolist()
    diff = float(np.abs(log_softmax(logits) - np.asarray(ref["logprobs"])).max())
    return {"class": type(model).__name__, "max_abs_logprob_diff": diff, "greedy": out,
            "greedy_equal": out == ref["greedy"], "token_ids_equal": hf_ids == ids}


# The value types llama.cpp's loader requires, as gguf-py (llama.cpp's own Python reader) sees them.
GGUF_TYPES = {
    "general.architecture": ["STRING"], "general.alignment": ["UINT32"], "general.file_type": ["UINT32"],
    "llama.context_length": ["UINT32"], "llama.embedding_length": ["UINT32"], "llama.block_count": ["UINT32"],
    "llama.feed_forward_length": ["UINT32"], "llama.attention.head_count": ["UINT32"],
    "llama.attention.head_count_kv": ["UINT32"], "llama.rope.dimension_count": ["UINT32"],
    "llama.attention.layer_norm_rms_epsilon": ["FLOAT32"], "llama.rope.freq_base": ["FLOAT32"],
    "tokenizer.ggml.model": ["STRING"], "tokenizer.ggml.tokens": ["ARRAY", "STRING"],
    "tokenizer.ggml.token_type": ["ARRAY", "INT32"], "tokenizer.ggml.merges": ["ARRAY", "STRING"],
}


def check_gguf_py(gguf):
    """None when gguf-py reads the file with the expected key types, else what differs."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return "gguf-py not installed"
    r = GGUFReader(gguf)

    def types(k):  # gguf-py lists no element type for an empty array (no merges)
        t = [x.name for x in r.fields[k].types]
        return t + GGUF_TYPES[k][1:] if t == ["ARRAY"] and not r.fields[k].data else t
    bad = [f"{k}: {types(k) if k in r.fields else 'missing'}"
           for k, want in GGUF_TYPES.items() if k not in r.fields or types(k) != want]
    return "; ".join(bad) or None


def check_llama_cpp(gguf, ref, greedy):
    from llama_cpp import Llama

    # f32 KV cache (llama.cpp's default is f16, which alone moves log-probs by ~1e-3).
    llm = Llama(model_path=gguf, n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                type_k=0, type_v=0)  # GGML_TYPE_F32
    ids = ref["ids"]
    cpp_ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    diff = float(np.abs(log_softmax(logits) - np.asarray(ref["logprobs"])).max())
    out = []
    seq = list(ids)
    for _ in range(greedy):  # argmax decoding with llama.cpp's own forward
        nxt = int(np.argmax(llm.scores[len(seq) - 1]))
        out.append(nxt)
        seq.append(nxt)
        llm.eval([nxt])
    return {"max_abs_logprob_diff": diff, "greedy": out, "greedy_equal": out == ref["greedy"],
            "token_ids_equal": list(cpp_ids) == ids, "n_vocab": llm.n_vocab()}


# Pre-tokenization check (GGUF's "starcoder" pre-tokenizer vs Loom's rule, and HF tokenizers
# with the pattern Loom writes into tokenizer.json). The last text holds a contraction
# directly followed by letters, the one documented difference for llama.cpp.
TOKENIZER_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 12345 and 3.14159, then x=42; y = -7",
    "  two spaces,\ttab and\nnewline  \n\n end",
    "Mixed CASE words, punctuation!? (brackets) [and] {braces} <tags> #hash @at",
    "don't stop, it's fine",
    "quote 'sample', it'smine and we'llgo",
]
CORPUS = ("The quick brown fox jumps over the lazy dog. Numbers like 12345 and 3.14159 appear; "
          "don't stop, it's fine. Mixed CASE words, punctuation!? (brackets) [and] {braces}.\n") * 200


def check_tokenizers(loom, work, have_cpp):
    """Trains a BPE tokenizer and a tiny model on shards, exports, compares tokenizations."""
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(CORPUS)
    shards = os.path.join(work, "shards")
    subprocess.run(["rm", "-rf", shards])
    run([loom, "data", "prepare", corpus, "--lines", "--vocab-size", "400", "--out", shards])
    run_dir = os.path.join(work, "bpe")
    cfg = os.path.join(work, "bpe.yaml")
    with open(cfg, "w") as f:
        f.write(f"run: {{dir: {run_dir}, seed: 7, threads: 1}}\nmodel: {{d_model: 32, n_layers: 1, n_heads: 2}}\n"
                f"data: {{source: shards, path: {shards}, seq_len: 32}}\n"
                "train: {steps: 2, batch_size: 2, log_every: 1, eval_every: 0, eval_batches: 1}\n")
    subprocess.run(["rm", "-rf", run_dir])
    run([loom, "train", cfg])
    hf_dir, gguf = os.path.join(work, "bpe_hf"), os.path.join(work, "bpe.gguf")
    run([loom, "export", "--ckpt", run_dir, "--format", "hf", "--out", hf_dir])
    run([loom, "export", "--ckpt", run_dir, "--format", "gguf", "--out", gguf])
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(hf_dir)
    llm = None
    if have_cpp:
        from llama_cpp import Llama
        llm = Llama(model_path=gguf, n_ctx=64, vocab_only=True, verbose=False)
    rows = []
    for text in TOKENIZER_TEXTS:
        ids = loom_score(loom, run_dir, text, 0)["ids"]
        row = {"text": text, "loom": ids, "transformers_equal": hf(text, add_special_tokens=False)["input_ids"] == ids}
        if llm is not None:
            cpp = list(llm.tokenize(text.encode(), add_bos=False, special=False))
            row["llama_cpp_equal"] = cpp == ids
            if cpp != ids:
                row["llama_cpp"] = cpp
        rows.append(row)
        print(f"tokenizer    {text!r:70s} transformers {row['transformers_equal']}  llama.cpp {row.get('llama_cpp_equal')}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loom", default="build/loom")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--greedy", type=int, default=8)
    ap.add_argument("--out", default="")
    ap.add_argument("--workdir", default="")
    args = ap.parse_args()
    loom = os.path.abspath(args.loom)
    work = args.workdir or tempfile.mkdtemp(prefix="loom_live_")
    os.makedirs(work, exist_ok=True)
    try:
        import llama_cpp  # noqa: F401
        have_cpp = True
    except Exception as e:  # not installed or failed to build
        have_cpp = False
        print(f"llama.cpp: skipped (cannot import llama_cpp: {e})")
    results, ok = {}, True
    for name, model_yaml in CONFIGS.items():
        run_dir = os.path.join(work, name)
        cfg = os.path.join(work, name + ".yaml")
        with open(cfg, "w") as f:
            f.write(f"run: {{dir: {run_dir}, seed: 7, threads: 1}}\n{model_yaml}\n"
                    f"data: {{seq_len: 32}}\ntrain: {{steps: {args.steps}, batch_size: 8, log_every: 20, eval_every: 0}}\n"
                    "optim: {lr: 3e-3}\n")
        subprocess.run(["rm", "-rf", run_dir])
        run([loom, "train", cfg])
        ref = loom_score(loom, run_dir, PROMPT, args.greedy)
        r = {"loom_greedy": ref["greedy"], "ids": ref["ids"]}
        for dtype in ["f32", "bf16"]:
            hf_dir = os.path.join(work, f"{name}_hf_{dtype}")
            run([loom, "export", "--ckpt", run_dir, "--format", "hf", "--out", hf_dir, "--dtype", dtype])
            t = check_transformers(hf_dir, ref, args.greedy)
            r[f"transformers_{dtype}"] = t
            if dtype == "f32":
                ok &= t["max_abs_logprob_diff"] < TOL and t["greedy_equal"] and t["token_ids_equal"]
            print(f"{name:12s} transformers {dtype}: {t['class']}, max |dlogp| {t['max_abs_logprob_diff']:.2e}, "
                  f"greedy equal {t['greedy_equal']}, token ids equal {t['token_ids_equal']}")
        if name != "gpt2" and have_cpp:
            for dtype in ["f32", "f16"]:
                gguf = os.path.join(work, f"{name}_{dtype}.gguf")
                run([loom, "export", "--ckpt", run_dir, "--format", "gguf", "--out", gguf, "--dtype", dtype])
                c = check_llama_cpp(gguf, ref, args.greedy)
                c["gguf_py_key_types"] = check_gguf_py(gguf) or "as llama.cpp requires"
                ok &= c["gguf_py_key_types"] == "as llama.cpp requires"
                r[f"llama_cpp_{dtype}"] = c
                if dtype == "f32":
                    ok &= c["max_abs_logprob_diff"] < TOL and c["greedy_equal"] and c["token_ids_equal"]
                print(f"{name:12s} llama.cpp {dtype}: max |dlogp| {c['max_abs_logprob_diff']:.2e}, "
                      f"greedy equal {c['greedy_equal']}, token ids equal {c['token_ids_equal']}")
        results[name] = r
    tok_rows = check_tokenizers(loom, work, have_cpp)
    # All but the contraction text must agree (that difference is documented).
    ok &= all(r["transformers_equal"] for r in tok_rows)
    ok &= all(r.get("llama_cpp_equal", True) for r in tok_rows[:-1])
    summary = {"prompt": PROMPT, "tokenizer_texts": tok_rows, "tolerance_f32": TOL, "llama_cpp_checked": have_cpp, "all_passed": bool(ok),
               "models": results}
    try:
        import transformers
        summary["transformers_version"] = transformers.__version__
    except Exception:
        pass
    if have_cpp:
        summary["llama_cpp_python_version"] = llama_cpp.__version__
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    print("ALL PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
