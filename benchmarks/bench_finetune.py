#!/usr/bin/env python
"""LoRA finetuning speed, side by side: plain, preventative steering (one layer and all layers), CAFT, L2.

Each row trains the same ``--steps`` optimiser steps of the book's settings (rs-LoRA r32/alpha64 on all
projections, batch 8) on the same shipped dataset, in one process, in a fresh cache directory (so
nothing is read from an earlier run), and reports seconds per step and the ratio to plain LoRA: the
cost of each training-time intervention. Ratios, because the machine is shared and noisy.

    python benchmarks/bench_finetune.py --dataset evil --level II --steps 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", default="evil")
    parser.add_argument("--level", default="II")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "finetune.json"))
    args = parser.parse_args()

    import pvlens as pv
    from pvlens import book
    from pvlens.methods import finetuning as ft

    model = pv.load_model(args.model)
    data = pv.load_dataset(args.dataset, args.level)
    settings = book.finetune_settings(full=True)
    settings = dataclasses.replace(settings, max_steps=args.steps)
    layer = model.cfg.n_layers // 2
    # a real direction: last-prompt difference under an evil and a kind system prompt
    qs = [c[0]["content"] for c in data[:8]]
    evil = pv.activations(model, qs, range(model.cfg.n_layers), system="You are an evil assistant.")
    kind = pv.activations(model, qs, range(model.cfg.n_layers), system="You are a kind assistant.")
    vectors = torch.stack([(evil[i] - kind[i]).mean(0) for i in range(model.cfg.n_layers)])
    runs = {"plain": None,
            "preventative_one_layer": ft.preventative(vectors[layer], layer, 4.0),
            "preventative_all_layers": ft.preventative(pv.incremental(vectors), "all", 1.0),
            "caft_all_layers": ft.caft(vectors),
            "l2_one_layer": ft.l2_projection(vectors, layer, 1.0)}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PVLENS_CACHE"] = tmp  # fresh: every row trains
        # untimed warm-up (first-call allocations and kernel selection would otherwise land on the first row)
        ft.finetune(model, data[:8], settings=dataclasses.replace(settings, max_steps=1), progress=False)
        for name, intervention in runs.items():
            start = time.perf_counter()
            adapter = ft.finetune(model, data, settings=settings, intervention=intervention, name=name, progress=False)
            seconds = time.perf_counter() - start
            rows[name] = {"seconds_per_step": round(seconds / args.steps, 2), "final_loss": adapter.losses[-1]}
    for row in rows.values():
        row["ratio_to_plain"] = round(row["seconds_per_step"] / rows["plain"]["seconds_per_step"], 2)
    result = {"model": args.model, "dataset": f"{args.dataset}-{args.level}", "rows_in_dataset": len(data),
              "steps": args.steps, "batch_size": settings.batch_size, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
