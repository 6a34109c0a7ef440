#!/usr/bin/env python
"""SAE training throughput, side by side on the same windows: pvlens's run vs sae-lens's runner defaults.

Both train the same BatchTopK SAE (same width, k, batch, lr) for ``--tokens`` tokens on the same token
windows (the book's ShareGPT + plain-English mix) in one process, and report training tokens per second
including the model forward that produces the activations:

- **pvlens**: ``pvlens.methods.sae.ActivationStream`` (the Hugging Face twin, forward stopped after the hooked
  block, a shuffle buffer) feeding sae-lens's ``SAETrainer``;
- **sae-lens runner**: ``LanguageModelSAETrainingRunner`` with its default store settings
  (``n_batches_in_buffer=20``, ``store_batch_size_prompts=32``, mixing fraction 0.5) on the
  TransformerLens model, with the same windows as a pre-tokenized ``datasets.Dataset``. One default is
  changed: the norm-scaling estimate reads 20 batches, as pvlens's does, not the default 1000 (2M tokens
  of forward passes before the first step here, about an hour on this machine).

Both times include the fixed start-up (shuffle buffer, norm estimate), so short runs understate the
steady-state rate of both.

    python benchmarks/bench_sae.py --tokens 200000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sae.json"))
    args = parser.parse_args()

    import datasets
    from sae_lens import BatchTopKTrainingSAEConfig, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
    from sae_lens.config import LoggingConfig

    import pvlens as pv
    from pvlens.methods import sae as S

    model = pv.load_model(args.model)
    recipe = replace(S.SAERecipe(layer=args.layer), train_tokens=args.tokens, n_checkpoints=0)
    windows = S.corpus_windows(model.hf_tokenizer, "train", recipe.n_windows + 64, recipe.context_size,
                               recipe.chat_fraction, recipe.seed)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stream = S.ActivationStream(model, windows, recipe.layer, recipe.batch_tokens, recipe.buffer_tokens,
                                    seed=recipe.seed)
        trainer = S._trainer(recipe, model.cfg.d_model, stream, Path(tmp) / "ours")
        trainer.fit()
        seconds = time.perf_counter() - start
        rows["pvlens (HF forward stopped at the layer + SAETrainer)"] = {
            "seconds": seconds, "tokens_per_s": args.tokens / seconds, "seconds_in_model": stream.seconds_in_model}

        cfg = LanguageModelSAERunnerConfig(
            sae=BatchTopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=recipe.d_sae, k=recipe.k,
                                           normalize_activations="expected_average_only_in"),
            model_name=args.model, hook_name=S.hook_name(recipe.layer), context_size=recipe.context_size,
            is_dataset_tokenized=True, streaming=False, training_tokens=args.tokens,
            train_batch_size_tokens=recipe.batch_tokens, lr=recipe.lr, lr_warm_up_steps=recipe.lr_warm_up_steps,
            prepend_bos=False, device="cpu", seed=recipe.seed, n_checkpoints=0,
            checkpoint_path=str(Path(tmp) / "runner"), output_path=str(Path(tmp) / "runner-out"),
            logger=LoggingConfig(log_to_wandb=False), dead_feature_window=250, feature_sampling_window=250,
            n_batches_for_norm_estimate=20)
        dataset = datasets.Dataset.from_dict({"input_ids": windows.tolist()})
        start = time.perf_counter()
        LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
        seconds = time.perf_counter() - start
        rows["sae-lens LanguageModelSAETrainingRunner (defaults, TransformerLens forward)"] = {
            "seconds": seconds, "tokens_per_s": args.tokens / seconds}
    ours, theirs = (r["tokens_per_s"] for r in rows.values())
    report = {"model": args.model, "layer": args.layer, "tokens": args.tokens, "d_sae": recipe.d_sae, "k": recipe.k,
              "batch_tokens": recipe.batch_tokens, "torch_threads": torch.get_num_threads(),
              "machine": platform.platform(), "rows": rows, "ratio_pvlens_over_runner": ours / theirs}
    for name, r in rows.items():
        print(f"{name:80s} {r['seconds']:8.1f} s  {r['tokens_per_s']:8.0f} tokens/s")
    print(f"ratio pvlens / sae-lens runner: {ours / theirs:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
