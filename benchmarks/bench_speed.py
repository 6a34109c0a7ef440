#!/usr/bin/env python
"""Side-by-side speed and memory benchmark: pvlens against the plain tools it is built on.

What is measured, in one process on one machine, on the model given by ``--model``:

1. **Generation throughput** (new tokens / s, greedy), at each batch size in ``--batches``:

   - ``hf_hook``: Hugging Face ``generate`` with a plain torch forward hook on decoder layer ``L``
     that adds ``alpha * v`` to the last position (the cheapest way to steer by hand);
   - ``pv_steered``: :func:`pvlens.generate` inside ``pv.steer(model, v, L, alpha, positions="response")``;
   - ``pv_plain`` and ``pv_monitored``: :func:`pvlens.generate` without steering, without and with
     ``monitor={L: v}`` (their time ratio is the cost of monitoring);
   - ``tl_stock`` (batch 1 only): stock TransformerLens ``generate`` with a hook on
     ``blocks.L.hook_resid_post``, fewer new tokens because it is slow, compared with ``hf_hook`` run
     for the same number of tokens (``hf_hook_tl_tokens``).

   Every row generates exactly ``--new-tokens`` tokens per prompt (``min_new_tokens`` = max), so a
   steering vector cannot make one row stop early. The pvlens rows include pvlens' own work
   (chat templating, padding, decoding), since that is what a user pays for.
2. **Activation collection**: ``pv.resid_post`` for 16 sequences of 128 tokens, against one plain
   ``hf_model(input_ids)`` forward pass of the same batch and against TransformerLens
   ``run_with_cache`` with a ``names_filter``. ``pv.resid_post`` stops the forward pass after the
   deepest layer asked for, so the deepest layer is measured too (``pv_resid_post_last_layer``).
3. **Load time and memory** in a fresh subprocess, run first: the time to import torch,
   transformers and transformer_lens, then ``pv.load_model`` alone, and the peak RSS after the load
   and after a 16-prompt steered ``pv.generate``. Peak RSS is read from ``VmHWM`` in
   ``/proc/self/status`` where it exists: ``ru_maxrss`` survives ``execve`` on Linux, so a child
   started from a large parent reports the parent's peak (it is kept in the JSON as ``ru_maxrss_gb``).

Why ratios: absolute numbers on a small, shared machine (2 cores, other jobs running) move by
tens of percent from one minute to the next. Every comparison is therefore made between variants
timed in the same process, after a warm-up call each, with the variants *interleaved* round by
round (A B C D, A B C D, ...) so a burst of background load hits all of them alike. The goals are
stated as ratios of the best-of-N times (the run least disturbed by other work); medians are
kept in the JSON as well. Load time and RSS are absolute and therefore the noisiest numbers here.

The script always exits 0: it measures, it does not test. Results go to
``benchmarks/results/speed-<model>.json`` (``--quick`` writes ``speed-<model>-quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import transformer_lens
import transformers

import pvlens as pv
from pvlens.lens.projection import NEUTRAL_PROMPTS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 0
VECTOR_NORM = 20.0
ALPHA = 1.0

QUESTIONS = NEUTRAL_PROMPTS  # the 16 neutral chat prompts pvlens measures residual norms on

# (key in "ratios" or "load", label, comparison, threshold)
GOALS = [
    ("steered_vs_hf_b{b}", "pv steered / HF+hook throughput, batch {b}", ">=", 0.9),
    ("monitor_cost_b{b}", "pv monitored / plain time, batch {b}", "<=", 1.05),
    ("resid_post_vs_forward", "pv.resid_post / HF forward time", "<=", 1.2),
    ("load_s", "pv.load_model seconds (fresh process)", "<=", 5.0),
    ("peak_rss_gb", "peak RSS GB, load + steered generate", "<=", 1.5),
]


# ----------------------------------------------------------------------------- arguments


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="name given to pv.load_model")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: pv.load_model's choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per variant (best and median kept)")
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt in every generation row")
    p.add_argument("--tl-new-tokens", type=int, default=16, help="new tokens for stock TransformerLens generate")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes for generation")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence for activation collection")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 16 new tokens")
    p.add_argument("--skip-subprocess", action="store_true", help="skip the fresh-process load/memory part")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/speed-<model>.json)")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.quick:
        args.repeats, args.new_tokens = 1, 16
    args.tl_new_tokens = min(args.tl_new_tokens, args.new_tokens)
    if args.out is None:
        stem = args.model.replace("/", "__") + ("-quick" if args.quick else "")
        args.out = RESULTS_DIR / f"speed-{stem}.json"
    return args


# ----------------------------------------------------------------------------- timing


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Callable):
    _sync()
    start = time.perf_counter()
    result = fn()
    _sync()
    return time.perf_counter() - start, result


def compare(variants: dict[str, Callable], repeats: int) -> dict[str, dict]:
    """Warm each variant up once, then time them interleaved, ``repeats`` rounds.

    A variant that raises is recorded as ``{"error": ...}`` and dropped from the rounds.
    Each entry keeps the times, best, median and the result of the last call.
    """
    stats: dict[str, dict] = {}
    live = {}
    for name, fn in variants.items():
        try:
            fn()
            live[name] = fn
            stats[name] = {"times_s": []}
        except Exception as err:  # noqa: BLE001 - a failing variant is a result, not a crash
            stats[name] = {"error": f"{type(err).__name__}: {err}"}
    for _ in range(repeats):
        for name, fn in live.items():
            seconds, result = _timed(fn)
            stats[name]["times_s"].append(round(seconds, 4))
            stats[name]["result"] = result
    for s in stats.values():
        if "times_s" in s:
            s["best_s"] = min(s["times_s"])
            s["median_s"] = statistics.median(s["times_s"])
    return stats


# ----------------------------------------------------------------------------- steering setup


def steering_vector(model) -> tuple[int, torch.Tensor]:
    """Layer ``n_layers // 2`` and a seeded random vector of norm 20 (float32, on the CPU)."""
    gen = torch.Generator().manual_seed(SEED)
    v = torch.randn(model.cfg.d_model, generator=gen)
    return model.cfg.n_layers // 2, v * (VECTOR_NORM / v.norm())


def add_to_last_position(delta: torch.Tensor):
    """A plain torch forward hook for an HF decoder layer: output[:, -1] += delta."""

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, -1] += delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return hook


# ----------------------------------------------------------------------------- generation variants


def left_pad(prompts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def hf_hook_fn(model, questions: list[str], n: int, layer: int, delta: torch.Tensor) -> Callable:
    """Baseline: HF generate, hand-made hook, same fixed token count."""
    tok, hf = model.hf_tokenizer, model.hf_model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = left_pad([pv.chat_ids(tok, q) for q in questions], pad, model.cfg.device)

    def run():
        handle = hf.model.layers[layer].register_forward_hook(add_to_last_position(delta))
        try:
            with torch.no_grad():
                out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                  min_new_tokens=n, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        finally:
            handle.remove()
        return out[:, ids.shape[1]:].tolist()

    return run


def pv_fn(model, questions: list[str], n: int, batch: int, *, steer=None, monitor=None) -> Callable:
    """pv.generate, optionally inside pv.steer(model, *steer) and/or with monitor=."""

    def run():
        kwargs = dict(temperature=0, max_new_tokens=n, min_new_tokens=n, batch_size=batch, progress=False)
        if monitor is not None:
            kwargs["monitor"] = monitor
        if steer is None:
            out = pv.generate(model, questions, **kwargs)
        else:
            with pv.steer(model, *steer, positions="response"):
                out = pv.generate(model, questions, **kwargs)
        return [g.response_ids for g in out]

    return run


def tl_fn(model, question: str, n: int, layer: int, delta: torch.Tensor) -> Callable:
    """Stock TransformerLens generate on one unpadded prompt, with a TL hook doing the same edit."""
    tokens = torch.tensor([pv.chat_ids(model.hf_tokenizer, question)], device=model.cfg.device)

    def hook(act, hook):
        return torch.cat([act[:, :-1], act[:, -1:] + delta.to(act.dtype)], dim=1)

    def run():
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)]):
            out = model.generate(tokens, max_new_tokens=n, use_past_kv_cache=True, do_sample=False,
                                 verbose=False, stop_at_eos=False)
        return out[:, tokens.shape[1]:].tolist()

    return run


def _summarise(stats: dict) -> dict:
    """Replace each variant's raw result by its token count and throughput."""
    out = {}
    for name, s in stats.items():
        s = dict(s)
        result = s.pop("result", None)
        if result is not None:
            s["new_tokens"] = sum(len(r) for r in result)
            s["tokens_per_s"] = round(s["new_tokens"] / s["best_s"], 2)
            s["tokens_per_s_median"] = round(s["new_tokens"] / s["median_s"], 2)
        out[name] = s
    return out


def _agreement(a: list[list[int]] | None, b: list[list[int]] | None) -> float | None:
    """Fraction of prompts whose greedy tokens are identical in two variants."""
    if not a or not b:
        return None
    return sum(x == y for x, y in zip(a, b)) / len(a)


def bench_generation(model, args, layer: int, v: torch.Tensor) -> dict:
    delta = (ALPHA * v).to(model.cfg.device, model.cfg.dtype)
    results = {}
    for b in args.batches:
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(b)]
        variants = {
            "hf_hook": hf_hook_fn(model, questions, args.new_tokens, layer, delta),
            "pv_steered": pv_fn(model, questions, args.new_tokens, b, steer=(v, layer, ALPHA)),
            "pv_plain": pv_fn(model, questions, args.new_tokens, b),
            "pv_monitored": pv_fn(model, questions, args.new_tokens, b, monitor={layer: v}),
        }
        if b == 1:
            variants["tl_stock"] = tl_fn(model, questions[0], args.tl_new_tokens, layer, delta)
            variants["hf_hook_tl_tokens"] = hf_hook_fn(model, questions, args.tl_new_tokens, layer, delta)
        print(f"  generation, batch {b}: {', '.join(variants)}", flush=True)
        stats = compare(variants, args.repeats)
        row = _summarise(stats)
        row["steered_same_tokens_as_hf_hook"] = _agreement(stats["pv_steered"].get("result"),
                                                           stats["hf_hook"].get("result"))
        same_as_plain = _agreement(stats["pv_steered"].get("result"), stats["pv_plain"].get("result"))
        row["steered_tokens_differ_from_plain"] = None if same_as_plain is None else same_as_plain < 1.0
        if "tl_stock" in stats:
            row["tl_same_tokens_as_hf_hook"] = _agreement(stats["tl_stock"].get("result"),
                                                          stats["hf_hook_tl_tokens"].get("result"))
        results[f"batch_{b}"] = row
    return results


# ----------------------------------------------------------------------------- activation collection


def activation_batch(model, n: int, length: int) -> list[list[int]]:
    """``n`` distinct chat-templated sequences cut to exactly ``length`` tokens (no padding needed)."""
    seqs = []
    for i in range(n):
        ids = pv.chat_ids(model.hf_tokenizer, " ".join(QUESTIONS[i:] + QUESTIONS[:i]))
        while len(ids) < length:
            ids = ids + ids
        seqs.append(ids[:length])
    return seqs


def bench_activations(model, args, layer: int) -> dict:
    seqs = activation_batch(model, 16, args.seq_len)
    ids = torch.tensor(seqs, device=model.cfg.device)
    last = model.cfg.n_layers - 1

    def hf_forward():
        with torch.no_grad():
            model.hf_model(ids, use_cache=False)

    def tl_cache():
        with torch.no_grad():
            model.run_with_cache(ids, names_filter=f"blocks.{layer}.hook_resid_post")

    variants = {
        "hf_forward": hf_forward,
        "pv_resid_post": lambda: pv.resid_post(model, seqs, [layer]),
        "pv_resid_post_last_layer": lambda: pv.resid_post(model, seqs, [last]),
        "tl_run_with_cache": tl_cache,
    }
    print(f"  activations, 16 x {args.seq_len} tokens: {', '.join(variants)}", flush=True)
    stats = compare(variants, args.repeats)
    for s in stats.values():
        s.pop("result", None)
    return stats


# ----------------------------------------------------------------------------- load time and memory

SUBPROCESS_CODE = textwrap.dedent("""
    import json, resource, sys, time
    cfg = json.loads(sys.argv[1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    ru_maxrss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9

    def rss():
        # ru_maxrss survives execve, so a child of a big parent starts at the parent's peak;
        # VmHWM (Linux) is the high-water mark of this process's own memory.
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024 / 1e9
        except (OSError, StopIteration):
            return ru_maxrss()
    t0 = time.perf_counter()
    import torch, transformers, transformer_lens
    t1 = time.perf_counter()
    import pvlens as pv
    t2 = time.perf_counter()
    rss_import = rss()
    model = pv.load_model(cfg["model"], device=cfg["device"])
    t3 = time.perf_counter()
    rss_load = rss()
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    v = v * (20.0 / v.norm())
    with pv.steer(model, v, model.cfg.n_layers // 2, 1.0, positions="response"):
        out = pv.generate(model, cfg["questions"], temperature=0, max_new_tokens=cfg["n"],
                          min_new_tokens=cfg["n"], batch_size=16, progress=False)
    t4 = time.perf_counter()
    print(json.dumps({
        "import_torch_transformers_tl_s": t1 - t0, "import_pvlens_s": t2 - t1, "load_s": t3 - t2,
        "load_breakdown_s": model.info.load_seconds, "steered_generate_s": t4 - t3,
        "generated_tokens": sum(len(g.response_ids) for g in out),
        "rss_after_import_gb": rss_import, "rss_after_load_gb": rss_load, "peak_rss_gb": rss(),
        "ru_maxrss_gb": ru_maxrss(), "device": str(model.cfg.device), "torch_threads": torch.get_num_threads(),
    }))
""")


def bench_load_memory(args) -> dict:
    cfg = {"model": args.model, "device": args.device, "n": args.new_tokens, "questions": QUESTIONS[:16]}
    print("  load + memory in a fresh process", flush=True)
    proc = subprocess.run([sys.executable, "-c", SUBPROCESS_CODE, json.dumps(cfg)],
                          capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"subprocess exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return {k: round(x, 4) if isinstance(x, float) else x for k, x in json.loads(lines[-1]).items()}


# ----------------------------------------------------------------------------- ratios and goals


def _ratio(num, den):
    return round(num / den, 4) if num and den else None


def ratios(gen: dict, acts: dict) -> dict:
    """Throughput ratios (higher is better) and time ratios (lower is better), best and median."""
    out = {}
    for key, row in gen.items():
        b = key.split("_")[1]
        for suffix, tps, sec in (("", "tokens_per_s", "best_s"), ("_median", "tokens_per_s_median", "median_s")):
            out[f"steered_vs_hf_b{b}{suffix}"] = _ratio(row["pv_steered"].get(tps), row["hf_hook"].get(tps))
            out[f"monitor_cost_b{b}{suffix}"] = _ratio(row["pv_monitored"].get(sec), row["pv_plain"].get(sec))
            if "tl_stock" in row:
                out[f"tl_vs_hf_b{b}{suffix}"] = _ratio(row["tl_stock"].get(tps), row["hf_hook_tl_tokens"].get(tps))
    for suffix, sec in (("", "best_s"), ("_median", "median_s")):
        fwd = acts.get("hf_forward", {}).get(sec)
        out[f"resid_post_vs_forward{suffix}"] = _ratio(acts.get("pv_resid_post", {}).get(sec), fwd)
        out[f"resid_post_last_layer_vs_forward{suffix}"] = _ratio(
            acts.get("pv_resid_post_last_layer", {}).get(sec), fwd)
        out[f"tl_cache_vs_forward{suffix}"] = _ratio(acts.get("tl_run_with_cache", {}).get(sec), fwd)
    return out


def goal_rows(args, rat: dict, load: dict) -> list[tuple[str, float | None, str, str]]:
    rows = []
    for key, label, op, threshold in GOALS:
        for b in (args.batches if "{b}" in key else [None]):
            k = key.format(b=b)
            value = rat.get(k, load.get(k))
            if value is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if (value >= threshold if op == ">=" else value <= threshold) else "FAIL"
            rows.append((label.format(b=b), value, f"{op} {threshold}", verdict))
    return rows


# ----------------------------------------------------------------------------- printing


def _fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def print_report(args, gen, acts, load, rat, goals) -> None:
    print(f"\ngeneration: new tokens / s (best of {args.repeats}; {args.new_tokens} new tokens, "
          f"TL {args.tl_new_tokens})")
    names = ["hf_hook", "pv_steered", "pv_plain", "pv_monitored", "tl_stock", "hf_hook_tl_tokens"]
    print(f"  {'variant':<20}" + "".join(f"{'batch ' + k.split('_')[1]:>12}" for k in gen))
    for name in names:
        cells = []
        for row in gen.values():
            s = row.get(name)
            cells.append("-" if s is None else ("error" if "error" in s else _fmt(s["tokens_per_s"])))
        print(f"  {name:<20}" + "".join(f"{c:>12}" for c in cells))
    for key, row in gen.items():
        for name in names:
            if "error" in row.get(name, {}):
                print(f"  ! {key} {name}: {row[name]['error'][:200]}")
        print(f"  {key}: steered tokens == HF+hook tokens for {_fmt(row['steered_same_tokens_as_hf_hook'], 2)} "
              f"of prompts; steering changed the text: {row['steered_tokens_differ_from_plain']}")

    print(f"\nactivations: 16 x {args.seq_len} tokens, seconds (best of {args.repeats})")
    if isinstance(acts.get("error"), str):
        print(f"  error: {acts['error'][-500:]}")
        acts = {}
    for name, s in acts.items():
        print(f"  {name:<26} {'error: ' + s['error'][:150] if 'error' in s else _fmt(s['best_s'], 3)}")

    print("\nload and memory (fresh process)")
    if "error" in load:
        print(f"  error: {load['error'][-500:]}")
    for k in ("import_torch_transformers_tl_s", "import_pvlens_s", "load_s", "rss_after_import_gb",
              "rss_after_load_gb", "peak_rss_gb", "ru_maxrss_gb"):
        if k in load:
            print(f"  {k:<32} {_fmt(load[k], 2)}")

    print("\nratios (best of N; medians in the JSON)")
    for k, x in rat.items():
        if not k.endswith("_median"):
            print(f"  {k:<38} {_fmt(x, 3)}")

    print("\ngoals")
    for label, value, target, verdict in goals:
        print(f"  {label:<46} {_fmt(value, 3):>8}  {target:<8} {verdict}")


# ----------------------------------------------------------------------------- main


def environment(model) -> dict:
    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "unknown"), "pvlens": pv.__version__,
        "torch_threads": torch.get_num_threads(), "device": str(model.cfg.device), "dtype": str(model.cfg.dtype),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def _section(name: str, fn: Callable, *a) -> dict:
    try:
        return fn(*a)
    except Exception:  # noqa: BLE001 - keep measuring the other sections
        return {"error": traceback.format_exc()}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    # First, before this process holds a model: the fresh process must not share the machine with it.
    load = {"skipped": True} if args.skip_subprocess else _section("load", bench_load_memory, args)
    print(f"loading {args.model} ...", flush=True)
    model = pv.load_model(args.model, device=args.device)
    layer, v = steering_vector(model)
    env = environment(model)
    print(f"model {model.info.name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
          f"layer {layer}, |v| = {VECTOR_NORM}, alpha = {ALPHA}, device {env['device']}, "
          f"{env['torch_threads']} threads, load average {env['loadavg_start']}", flush=True)

    gen = _section("generation", bench_generation, model, args, layer, v)
    acts = _section("activations", bench_activations, model, args, layer)
    if "error" in gen:
        print(gen["error"])
        gen = {}
    rat = ratios(gen, acts if "error" not in acts else {})
    goals = goal_rows(args, rat, load)
    env["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    env["wall_s"] = round(time.time() - started, 1)

    print_report(args, gen, acts, load, rat, goals)
    write_json(args.out, {
        "model": args.model, "quick": args.quick,
        "config": {"repeats": args.repeats, "new_tokens": args.new_tokens, "tl_new_tokens": args.tl_new_tokens,
                   "batches": args.batches, "seq_len": args.seq_len, "layer": layer, "vector_norm": VECTOR_NORM,
                   "alpha": ALPHA, "seed": SEED},
        "environment": env, "generation": gen, "activations": acts, "load_memory": load, "ratios": rat,
        "goals": [dict(zip(("goal", "value", "target", "verdict"), g)) for g in goals],
    })
    print(f"\nwrote {args.out} ({env['wall_s']} s; load average {env['loadavg_start']} -> {env['loadavg_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
