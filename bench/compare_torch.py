"""compare_torch.py: trains the same model in Loom (bench_train) and PyTorch eager (torch_model.py),
alternating the two in separate processes, and reports per configuration and thread count the
median step time of each, the ratio PyTorch/Loom, tokens/s, GFLOP/s, MFU and peak RSS.

Each (configuration, threads) pair runs R rounds; a round runs every setting of both frameworks
once, Loom and PyTorch interleaved (order reversed on odd rounds so drift hits both alike). A
setting's time is the median of all its timed steps over the rounds. Both sides are compared at
their fastest setting (OpenMP wait policy etc.), which is reported; Loom's default is shown too.

MFU = achieved FLOP/s / GEMM peak, where the peak is the best square-512 f32 GEMM rate any
process (Loom's OpenBLAS or PyTorch's MKL) measured at that thread count in this run, so both
frameworks are divided by the same machine number. FLOPs per token: see bench/README.md.

With --precision bf16 both compute their products in bf16 with f32 master weights: Loom with
--matmul-precision bf16 (AMX), PyTorch with autocast or float32 matmul precision "medium"
(oneDNN, AMX), whichever is faster; MFU is then against the bf16 GEMM rate measured in the run.

Run:  python bench/compare_torch.py [--quick] [--configs llama-tiny,...] [--threads 1,2]
                                    [--precision f32|bf16]
                                    [--loom-bin build-bench/bench/bench_train] [--update-readme]
      python bench/compare_torch.py --from-json bench/results/<file>.json [--update-readme]
Writes bench/results/<date>-<shortcommit>[-quick].json and prints a Markdown table.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name, model shape, and (warm-up, timed steps) per process for a full run.
CONFIGS = [
    dict(name="llama-tiny", preset="llama", vocab=4096, d=128, layers=4, heads=4, seq=128, batch=16, steps=(3, 10)),
    dict(name="llama-small", preset="llama", vocab=8192, d=256, layers=6, heads=8, seq=256, batch=8, steps=(3, 10)),
    dict(name="gpt2-small", preset="gpt2", vocab=8192, d=256, layers=6, heads=8, seq=256, batch=8, steps=(3, 10)),
    dict(name="gpt2-124M", preset="gpt2", vocab=50257, d=768, layers=12, heads=12, seq=64, batch=4, steps=(2, 5)),
]

# Environment settings tried per framework. libgomp runs both Loom's and PyTorch's OpenMP (and
# PyTorch's MKL through its GNU threading layer), so KMP_* (Intel OpenMP) variables do nothing
# here; GOMP_SPINCOUNT is libgomp's spin-then-sleep knob. One thread has no team to wait on, so
# only the default and PASSIVE run there (a check that the policy does not matter).
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES")
LOOM_SETTINGS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "active": {"OMP_WAIT_POLICY": "ACTIVE"}}
TORCH_SETTINGS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "active": {"OMP_WAIT_POLICY": "ACTIVE"},
                  "spin10k": {"GOMP_SPINCOUNT": "10000"}}
ONE_THREAD_SETTINGS = ("default", "passive")
# At bf16, PyTorch's two bf16 modes (torch_model.py --precision), each with and without PASSIVE.
TORCH_BF16_SETTINGS = {"autocast": ("autocast", {}), "autocast-passive": ("autocast", {"OMP_WAIT_POLICY": "PASSIVE"}),
                       "medium": ("medium", {}), "medium-passive": ("medium", {"OMP_WAIT_POLICY": "PASSIVE"})}
ONE_THREAD_BF16_SETTINGS = ("default", "passive", "autocast", "medium")


def torch_settings(precision):
    """name -> (torch_model.py --precision, environment) for one precision."""
    if precision == "bf16":
        return TORCH_BF16_SETTINGS
    return {k: ("f32", v) for k, v in TORCH_SETTINGS.items()}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool only blanks one field
        return ""


def machine_description(loom_bin):
    lscpu = sh("lscpu")
    field = lambda k: (re.search(rf"^{re.escape(k)}:\s*(.+)$", lscpu, re.M) or [None, ""])[1].strip()
    mem_kb = int((re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()) or [0, 0])[1])
    torch_info = json.loads(sh(f"{sys.executable} -c \"import json, torch; print(json.dumps({{'version': torch.__version__, "
                               f"'blas': 'mkl' if torch.backends.mkl.is_available() else 'other', "
                               f"'parallel': torch.__config__.parallel_info().splitlines()[-1]}}))\"") or "{}")
    return {
        "cpu_model": field("Model name"), "cpus": field("CPU(s)"), "cores_per_socket": field("Core(s) per socket"),
        "threads_per_core": field("Thread(s) per core"), "sockets": field("Socket(s)"), "hypervisor": field("Hypervisor vendor"),
        "cpu_flags_avx512": "avx512f" in field("Flags"), "cpu_flags_amx_bf16": "amx_bf16" in field("Flags"),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(), "torch": torch_info,
        "loom_commit": sh(f"git -C {ROOT} rev-parse HEAD"),
        # Uncommitted changes to the code bench_train was built from (bench/ itself excluded).
        "loom_tree_changes": sh(f"git -C {ROOT} status --porcelain -- runtime models optim").splitlines(),
        "loom_binary": os.path.relpath(loom_bin, ROOT),
        "loom_binary_built": datetime.datetime.fromtimestamp(os.path.getmtime(loom_bin)).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS and k != "LOOM_PROFILE"}
    env.update(extra)
    return env


def run_one(framework, cfg, threads, setting, warmup, steps, args, adamw):
    shape = ["--preset", cfg["preset"], "--vocab", str(cfg["vocab"]), "--d", str(cfg["d"]), "--layers",
             str(cfg["layers"]), "--heads", str(cfg["heads"]), "--seq", str(cfg["seq"]), "--batch", str(cfg["batch"]),
             "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads), "--json"]
    if framework == "loom":
        cmd = [args.loom_bin] + shape + ["--matmul-precision", args.precision]
        env = clean_env({"OMP_NUM_THREADS": str(threads), **LOOM_SETTINGS[setting]})
    else:
        mode, extra = torch_settings(args.precision)[setting]
        cmd = [sys.executable, os.path.join(HERE, "torch_model.py"), "--adamw", adamw, "--precision", mode] + shape
        env = clean_env(extra)  # torch.set_num_threads(n) inside
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        print(f"  {framework}/{setting} FAILED ({p.returncode}): {p.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["setting"], r["wall_s"] = setting, round(time.time() - t0, 2)
    print(f"  {framework:7s} {setting:8s} median {r['median_step_s'] * 1e3:9.1f} ms  peak RSS {r['peak_rss_mb']:7.0f} MB"
          f"  GEMM peak {r['gemm_peak_gflops']:6.1f} GFLOP/s  loss {r['first_loss']:.3f}", flush=True)
    return r


def probe_adamw(cfg, threads):
    """Fastest AdamW implementation (fused / foreach / for-loop) for this model and thread count."""
    cmd = [sys.executable, os.path.join(HERE, "torch_model.py"), "--probe-adamw", "--preset", cfg["preset"],
           "--vocab", str(cfg["vocab"]), "--d", str(cfg["d"]), "--layers", str(cfg["layers"]), "--heads",
           str(cfg["heads"]), "--seq", str(cfg["seq"]), "--batch", str(cfg["batch"]), "--threads", str(threads)]
    p = subprocess.run(cmd, env=clean_env({"OMP_WAIT_POLICY": "PASSIVE"}), capture_output=True, text=True)
    times = json.loads(p.stdout.strip().splitlines()[-1])["adamw_step_s"] if p.returncode == 0 else {}
    times = {k: v for k, v in times.items() if v is not None}
    return (min(times, key=times.get) if times else "foreach"), times


def summarize(runs):
    """Pools the timed steps of every round of one (framework, setting)."""
    steps = [t for r in runs for t in r["step_s"]]
    med = statistics.median(steps)
    r0 = runs[0]
    tokens = r0["batch"] * r0["seq"]
    return {
        "setting": r0["setting"], "median_step_s": med, "round_medians_s": [r["median_step_s"] for r in runs],
        "tokens_per_s": tokens / med, "achieved_gflops": r0["flops_per_token"] * tokens / med / 1e9,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "gemm_peak_gflops": max(r["gemm_peak_gflops"] for r in runs),
        "params": r0["params"], "flops_per_token": r0["flops_per_token"], "first_loss": r0["first_loss"],
        "rss_after_import_mb": r0.get("rss_after_import_mb"), "adamw": r0.get("adamw"),
    }


def round_ratios(e):
    """PyTorch/Loom round by round: the two best settings' medians paired by round (each pair ran
    minutes apart), which shows how far the machine alone moves the ratio."""
    return [t / l for t, l in zip(e["torch_best"]["round_medians_s"], e["loom_best"]["round_medians_s"])]


def markdown(results):
    hdr = ("| config | threads | Loom ms/step | PyTorch ms/step | ratio PyTorch/Loom | per round | Loom tok/s | "
           "Loom GFLOP/s | Loom MFU | PyTorch MFU | Loom peak RSS MB | PyTorch peak RSS MB | PyTorch setting | "
           "Loom setting (default ms) |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for e in results:
        lo, to, ld = e["loom_best"], e["torch_best"], e["loom_default"]
        rr = round_ratios(e)
        lines.append(
            f"| {e['config']} | {e['threads']} | {lo['median_step_s'] * 1e3:.1f} | {to['median_step_s'] * 1e3:.1f} | "
            f"{e['ratio_torch_over_loom']:.2f} | {min(rr):.2f}-{max(rr):.2f} | {lo['tokens_per_s']:.0f} | "
            f"{lo['achieved_gflops']:.1f} | "
            f"{100 * e['loom_mfu']:.1f}% | {100 * e['torch_mfu']:.1f}% | {lo['peak_rss_mb']:.0f} | {to['peak_rss_mb']:.0f} | "
            f"{to['setting']}, AdamW {to['adamw']} | {lo['setting']} ({ld['median_step_s'] * 1e3:.1f}) |")
    return "\n".join(lines)


def settings_table(results):
    lines = ["| config | threads | framework | setting | median ms/step | per-round medians ms |", "|---|---|---|---|---|---|"]
    for e in results:
        for fw in ("loom", "pytorch"):
            for s in e["settings"][fw]:
                rounds = ", ".join(f"{t * 1e3:.0f}" for t in s["round_medians_s"])
                lines.append(f"| {e['config']} | {e['threads']} | {fw} | {s['setting']} | {s['median_step_s'] * 1e3:.1f} | {rounds} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round, 1 warm-up + 2 timed steps (smoke test)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default=",".join(c["name"] for c in CONFIGS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: Loom's matmul precision bf16 against PyTorch's bf16 modes (needs AMX-BF16)")
    ap.add_argument("--steps", default=None, metavar="W,N",
                    help="warm-up and timed steps per process for every config (default: each config's own)")
    ap.add_argument("--multi-thread-settings", default=None, metavar="S1,S2",
                    help="only these settings at more than one thread (each framework runs those it has; "
                         "default: all of them)")
    ap.add_argument("--loom-bin", default=os.path.join(ROOT, "build-bench", "bench", "bench_train"))
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<date>-<commit>[-quick].json)")
    ap.add_argument("--update-readme", action="store_true", help="replace the results table in bench/README.md")
    ap.add_argument("--from-json", default=None, help="re-render the tables (and README) from a results file, run nothing")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            return render(json.load(f), args.from_json, args.update_readme)
    if not os.access(args.loom_bin, os.X_OK):
        sys.exit(f"compare_torch: no bench_train at {args.loom_bin}; build it with\n  cmake -S . -B build-bench -G Ninja "
                 "-DLOOM_CUDA=OFF && cmake --build build-bench -j2 --target bench_train")
    rounds = 1 if args.quick else args.rounds
    wanted = args.configs.split(",")
    unknown = set(wanted) - {c["name"] for c in CONFIGS}
    if unknown:
        sys.exit(f"compare_torch: unknown config(s) {sorted(unknown)}")
    thread_counts = [int(t) for t in args.threads.split(",")]

    machine = machine_description(args.loom_bin)
    started = datetime.datetime.now()
    print(f"machine: {machine['cpu_model']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, torch "
          f"{machine['torch'].get('version')}, Loom {machine['loom_commit'][:9]}; load average at start "
          f"{machine['loadavg_start'][0]:.2f}", flush=True)

    results = []
    for cfg in [c for c in CONFIGS if c["name"] in wanted]:
        warmup, steps = (1, 2) if args.quick else cfg["steps"]
        if args.steps and not args.quick:
            warmup, steps = (int(x) for x in args.steps.split(","))
        multi = args.multi_thread_settings.split(",") if args.multi_thread_settings else None
        for n in thread_counts:
            one = ONE_THREAD_BF16_SETTINGS if args.precision == "bf16" else ONE_THREAD_SETTINGS
            keep = lambda s: (s in one) if n == 1 else (multi is None or s in multi)
            lset = [s for s in LOOM_SETTINGS if keep(s)]
            tset = [s for s in torch_settings(args.precision) if keep(s)]
            adamw, adamw_times = probe_adamw(cfg, n)
            print(f"{cfg['name']} x {n} thread(s): PyTorch AdamW {adamw} "
                  f"({', '.join(f'{k} {v * 1e3:.1f} ms' for k, v in adamw_times.items())})", flush=True)
            order = []
            for i in range(max(len(lset), len(tset))):
                if i < len(lset): order.append(("loom", lset[i]))
                if i < len(tset): order.append(("pytorch", tset[i]))
            runs = {("loom", s): [] for s in lset} | {("pytorch", s): [] for s in tset}
            for r in range(rounds):
                print(f" round {r + 1}/{rounds}", flush=True)
                for fw, s in (order if r % 2 == 0 else order[::-1]):
                    out = run_one(fw, cfg, n, s, warmup, steps, args, adamw)
                    if out: runs[(fw, s)].append(out)
            summ = {k: summarize(v) for k, v in runs.items() if v}
            loom = [v for (fw, _), v in summ.items() if fw == "loom"]
            torch_ = [v for (fw, _), v in summ.items() if fw == "pytorch"]
            if not loom or not torch_:
                print(f"{cfg['name']} x {n}: no complete runs, skipped", file=sys.stderr)
                continue
            if loom[0]["params"] != torch_[0]["params"] or abs(loom[0]["flops_per_token"] - torch_[0]["flops_per_token"]) > 1:
                sys.exit(f"compare_torch: models differ: Loom {loom[0]['params']} params / {loom[0]['flops_per_token']} "
                         f"FLOP/token, PyTorch {torch_[0]['params']} / {torch_[0]['flops_per_token']}")
            lb, tb = min(loom, key=lambda v: v["median_step_s"]), min(torch_, key=lambda v: v["median_step_s"])
            results.append({
                "config": cfg["name"], "shape": {k: v for k, v in cfg.items() if k not in ("name", "steps")},
                "threads": n, "rounds": rounds, "warmup": warmup, "steps": steps,
                "params": lb["params"], "flops_per_token": lb["flops_per_token"], "adamw_probe_s": adamw_times,
                "settings": {"loom": loom, "pytorch": torch_},
                "loom_best": lb, "torch_best": tb, "loom_default": summ[("loom", "default")] if ("loom", "default") in summ else lb,
                "ratio_torch_over_loom": tb["median_step_s"] / lb["median_step_s"],
                "raw_runs": {f"{fw}/{s}": v for (fw, s), v in runs.items()},
            })

    # One machine peak per thread count: the best GEMM rate any process measured in this run.
    peak = {}
    for e in results:
        for s in e["settings"]["loom"] + e["settings"]["pytorch"]:
            peak[e["threads"]] = max(peak.get(e["threads"], 0), s["gemm_peak_gflops"])
    for e in results:
        p = peak[e["threads"]]
        e["machine_gemm_peak_gflops"] = p
        e["loom_mfu"] = e["loom_best"]["achieved_gflops"] / p
        e["torch_mfu"] = e["torch_best"]["achieved_gflops"] / p

    machine["loadavg_end"] = os.getloadavg()
    commit = machine["loom_commit"][:7] or "nocommit"
    tag = ("-bf16" if args.precision == "bf16" else "") + ("-quick" if args.quick else "")
    out = args.out or os.path.join(HERE, "results", f"{started:%Y-%m-%d}-{commit}{tag}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    doc = {"started": started.isoformat(timespec="seconds"), "finished": datetime.datetime.now().isoformat(timespec="seconds"),
           "quick": args.quick, "precision": args.precision, "machine": machine, "machine_gemm_peak_gflops": peak, "results": results}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)

    render(doc, out, args.update_readme)


def render(doc, out, update_readme):
    """Prints the note and tables for one results document; optionally puts them in README.md."""
    machine, results, peak = doc["machine"], doc["results"], doc["machine_gemm_peak_gflops"]
    runs = sorted({f"{e['rounds']} round(s) x ({e['warmup']} warm-up + {e['steps']} timed steps)" for e in results})
    per_cfg = "; ".join(f"{r}: " + ", ".join(sorted({e["config"] for e in results
                        if f"{e['rounds']} round(s) x ({e['warmup']} warm-up + {e['steps']} timed steps)" == r}))
                        for r in runs)
    load0, load1 = machine["loadavg_start"][0], machine.get("loadavg_end", [float("nan")])[0]
    precision = doc.get("precision", "f32")
    what = ("bf16 products with f32 master weights (Loom --matmul-precision bf16; PyTorch autocast or matmul "
            "precision medium). " if precision == "bf16" else "")
    note = (f"{what}Measured {doc['started'][:10]} at Loom {machine['loom_commit'][:9]}"
            f"{' (plus uncommitted changes in runtime/, models/ or optim/)' if machine.get('loom_tree_changes') else ''} on "
            f"{machine['cpu_model']} ({machine['cpus']} CPUs, {machine['memory_gib']} GiB), PyTorch "
            f"{machine['torch'].get('version')}; {per_cfg}. Load average {load0:.2f} at start, {load1:.2f} at end"
            f"{' (other processes were running: timings are noisy)' if max(load0, load1) > 0.5 else ''}. "
            f"GEMM peak (MFU denominator): {', '.join(f'{k} thread(s) {v:.1f} GFLOP/s' for k, v in sorted(peak.items()))}. "
            f"Raw data: `{os.path.relpath(out, ROOT)}`.")
    table = markdown(results)
    print("\n" + note + "\n\n" + table + "\n\nAll settings:\n\n" + settings_table(results))
    if update_readme:
        path = os.path.join(HERE, "README.md")
        text = open(path).read()
        marker = "results-bf16" if precision == "bf16" else "results"
        block = (f"<!-- {marker}:begin -->\n{note}\n\n{table}\n\nEvery setting tried (median of all timed steps; "
                 f"per-round medians):\n\n{settings_table(results)}\n<!-- {marker}:end -->")
        if f"<!-- {marker}:begin -->" not in text:
            sys.exit(f"compare_torch: bench/README.md has no <!-- {marker}:begin --> ... <!-- {marker}:end --> block")
        text = re.sub(rf"<!-- {marker}:begin -->.*<!-- {marker}:end -->", lambda _: block, text, flags=re.S)
        open(path, "w").write(text)
        print(f"updated {os.path.relpath(path, ROOT)}")
    print(f"wrote {os.path.relpath(out, ROOT)}")

if __name__ == "__main__":
    main()
