#!/usr/bin/env python
"""ΔP screening speed, side by side on the same samples: a plain forward pass, ΔP of precomputed
responses, the prompt-only proxy, and full ΔP including the base model's greedy answers.

All rows run in one process on the same ShareGPT samples (first user + first assistant turn,
prompts <= 512 tokens, answers cut to ``--answer-chars``) and report tokens per second over the
tokens they read, interleaved round by round so background load hits them alike (best of
``--repeats``). Goals (issue 6):

- ΔP of precomputed responses >= 0.8x the tokens/s of a plain Hugging Face forward pass over the
  same token sequences (dataset and base pairs, the same length-sorted batches);
- the prompt-only proxy >= 10x faster than full ΔP including base-response generation.

The plain forward runs every layer; screening stops after the probe layer, so a second reference
row stops the plain forward at that layer too (what the screening costs beyond reading one layer).

    python benchmarks/bench_screen.py --samples 64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def best(times: list[float]) -> float:
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--answer-chars", type=int, default=800)
    parser.add_argument("--base-max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "screen.json"))
    args = parser.parse_args()

    import pvlens as pv
    from pvlens.lens.projection import block_outputs, right_padded
    from pvlens.methods import screening

    model = pv.load_model(args.model)
    tok = model.hf_tokenizer
    samples = screening.sharegpt_samples(tok, args.samples, max_prompt_tokens=512)
    samples = [screening.Sample(s.id, s.line, s.prompt, s.response[: args.answer_chars]) for s in samples]
    layer = model.cfg.n_layers // 2
    generator = torch.Generator().manual_seed(0)
    probe = screening.Probe.from_vector("random", torch.randn(model.cfg.d_model, generator=generator), layer)
    settings = screening.ScreenSettings(base_max_new_tokens=args.base_max_new_tokens, chunk_size=len(samples))
    proxy_settings = screening.ScreenSettings(proxy=True, chunk_size=len(samples))

    # base responses once, for the "precomputed" rows
    base = dict(zip([s.prompt_key for s in samples],
                    screening.base_responses(model, [s.prompt for s in samples], settings)))
    pairs = [screening.split_ids(tok, s.prompt, s.response) for s in samples]
    base_pairs = [screening.split_ids(tok, s.prompt, base[s.prompt_key]) for s in samples]
    sequences = [p + r for p, r in pairs + base_pairs]
    all_tokens = sum(len(s) for s in sequences)
    data_tokens = sum(len(p) + len(r) for p, r in pairs)

    @torch.no_grad()
    def plain_forward(stop_at: int | None) -> None:
        for batch in screening.token_batches([len(s) for s in sequences], settings.max_batch_tokens):
            ids, mask = right_padded([sequences[i] for i in batch])
            if stop_at is None:
                model.hf_model.model(input_ids=ids, attention_mask=mask, use_cache=False)
            else:
                block_outputs(model.hf_model, ids, mask, [stop_at])

    rows = {
        "plain HF forward, all layers (dataset + base pairs)": (lambda: plain_forward(None), all_tokens),
        f"plain HF forward, stopped after layer {layer}": (lambda: plain_forward(layer), all_tokens),
        "ΔP, precomputed base responses": (
            lambda: screening.score_chunk(model, samples, [probe], settings, base), all_tokens),
        "prompt-only proxy": (lambda: screening.score_chunk(model, samples, [probe], proxy_settings), data_tokens),
        "ΔP incl. base-response generation": (
            lambda: screening.score_chunk(model, samples, [probe], settings, {}), all_tokens),
    }
    for fn, _ in rows.values():  # warm-up
        if fn is not rows["ΔP incl. base-response generation"][0]:
            fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, (fn, _) in rows.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: {"seconds_best": best(times[name]), "seconds_all": times[name], "tokens": tokens,
                     "tokens_per_s": tokens / best(times[name])} for name, (_, tokens) in rows.items()}
    plain = result["plain HF forward, all layers (dataset + base pairs)"]["tokens_per_s"]
    stopped = result[f"plain HF forward, stopped after layer {layer}"]["tokens_per_s"]
    dp = result["ΔP, precomputed base responses"]["tokens_per_s"]
    proxy_s = result["prompt-only proxy"]["seconds_best"]
    full_s = result["ΔP incl. base-response generation"]["seconds_best"]
    goals = {"ΔP precomputed / plain forward (tokens/s), goal >= 0.8": dp / plain,
             "ΔP precomputed / plain forward stopped at the layer (tokens/s), reference": dp / stopped,
             "full ΔP time / proxy time, goal >= 10": full_s / proxy_s}
    report = {"model": args.model, "samples": len(samples), "layer": layer, "data_tokens": data_tokens,
              "all_tokens": all_tokens, "base_max_new_tokens": args.base_max_new_tokens, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads(), "machine": platform.platform(), "rows": result,
              "ratios": goals}
    for name, r in result.items():
        print(f"{name:58s} {r['seconds_best']:8.2f} s  {r['tokens_per_s']:8.0f} tok/s  ({r['tokens']} tokens)")
    for name, value in goals.items():
        print(f"{name:80s} {value:6.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
