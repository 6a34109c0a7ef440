"""The ``pvlens`` command line: ``pvlens fetch [MODEL...]``, ``pvlens info [MODEL]``,
``pvlens capability [MODEL] [-n N]``, ``pvlens generate-trait NAME --description TEXT --out FILE.json``,
``pvlens extract TRAIT`` and ``pvlens screen DATA.jsonl --trait TRAIT``."""

from __future__ import annotations

import argparse
import sys

from pvlens.core.config import default_model_name
from pvlens.core.errors import PVLensError
from pvlens.models import registry

# Each command imports the stack it needs when it runs (function-local imports below, on purpose): `pvlens fetch`
# and a bad input file must fail or finish in a second, without importing torch, TransformerLens and sae-lens.


def _fetch(names: list[str]) -> None:
    for name in names or [default_model_name()]:
        spec = registry.resolve(name)
        if not isinstance(spec, registry.OfflineModel):
            print(f"{name}: not an offline model; it loads from the Hugging Face hub or its cache")
            continue
        path = registry.ensure_converted(spec)
        print(f"{spec.name}: ready at {path}")


def _info(name: str | None) -> None:
    from pvlens.models.loading import describe_model, load_model

    model = load_model(name)
    print(describe_model(model))
    print({k: round(v, 2) for k, v in model.info.load_seconds.items()})


def _generate_trait(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pvlens.traits.generator import generate_artifacts

    description = args.description
    if args.description_file:
        try:
            description = Path(args.description_file).read_text(encoding="utf-8")
        except OSError as err:
            raise PVLensError(f"cannot read {args.description_file}: {err.strerror}") from None
    artifacts = generate_artifacts(args.name, description, args.question_instruction, model=args.model,
                                   base_url=args.base_url, attempts=args.attempts, seed=args.seed)
    path = artifacts.save(args.out)
    print(f"{artifacts.trait}: wrote {path} ({len(artifacts.instructions)} instruction pairs, "
          f"{len(artifacts.extract_questions)} extract + {len(artifacts.eval_questions)} eval questions; "
          f"{artifacts.source})")


def _capability(args) -> None:
    import json

    from pvlens.methods.capability import capability_suite
    from pvlens.models.loading import load_model

    model = load_model(args.model)
    n = "all" if args.n == "all" else (None if args.n is None else int(args.n))
    report = capability_suite(model, tasks=args.tasks, n_per_task=n, seed=args.seed, batch_size=args.batch_size)
    print(report.table())
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": report.model, "seed": report.seed, "seconds": report.seconds,
                       "notes": report.notes, "tasks": report.rows()}, handle, indent=2)


def _judge_validate(args) -> None:
    from pvlens.judges.training import format_table, validate_judges

    print(format_table(validate_judges(limit=args.limit)))


def _extract(args) -> None:
    from pvlens.judges import default_judge
    from pvlens.methods.extraction import extract_persona, prompt_separation
    from pvlens.models.loading import load_model
    from pvlens.traits.artifacts import load_trait

    model, artifacts = load_model(args.model), load_trait(args.trait)
    result = extract_persona(model, artifacts, default_judge(), n_per_question=args.n_per_question,
                             max_new_tokens=args.max_new_tokens, questions=args.questions, seed=args.seed)
    print(result.summary())
    vector = result.vectors[args.variant]
    if args.out:
        print(f"saved {vector.save(args.out)}")
    aucs = prompt_separation(model, artifacts, vector, split="eval")
    print(f"held-out separation (eval questions, last prompt token, {args.variant}): AUC per layer")
    print("  " + "  ".join(f"{layer}:{value:.2f}" for layer, value in aucs.items()))


def _screen(args) -> int:
    """``pvlens screen``: score a chat JSONL by ΔP (or the prompt-only proxy); 3 when a threshold is exceeded."""
    import pandas as pd

    from pvlens.judges import default_judge
    from pvlens.methods import screening
    from pvlens.methods.persona import Persona
    from pvlens.models.loading import load_model

    report = screening.read_samples(args.data)  # before loading a model: a bad file fails in a second
    settings = screening.ScreenSettings(proxy=args.proxy, max_tokens=args.max_tokens, chunk_size=args.chunk_size,
                                        max_batch_tokens=max(args.max_batch_tokens, args.max_tokens),
                                        base_max_new_tokens=args.base_max_new_tokens)
    model = load_model(args.model)
    if args.vector:
        from pvlens.lens.vectors import PersonaVector

        if args.layer is None or len(args.trait) != 1:
            raise PVLensError("--vector needs exactly one --trait (its name) and --layer")
        vector = PersonaVector.load(args.vector, model)
        probes = [screening.Probe.from_vector(args.trait[0], vector[args.layer], args.layer)]
    else:
        judge = default_judge()  # the extraction judge: screening reads vectors, it judges nothing
        probes = [Persona.of(model, trait, layer=args.layer, judge=judge).probe for trait in args.trait]
    engine = None
    if args.engine == "ray":
        from pvlens.methods.screening.ray import ray_engine

        engine = ray_engine(model, probes, settings, address=args.ray_address, replicas=args.replicas)
    server = (args.base_model, args.base_url) if args.base_url or args.base_model else None
    result = screening.screen(model, report, probes, settings, engine=engine, log_path=args.cache, base_server=server)
    scores = result.scores
    if args.judge and not scores.empty:
        judged = pd.concat([screening.judge_samples(model, report.samples, t) for t in args.trait])
        scores = scores.merge(judged, on=["id", "line", "trait"], how="left")
    column = "proxy_delta_p" if args.proxy else "delta_p"
    print(screening.summary_text(result, report.samples, column, args.top))
    if args.out:
        print(f"wrote {screening.write_table(scores, args.out)} ({len(scores)} rows)")
    failures = []
    for trait, g in scores.groupby("trait") if not scores.empty else []:
        if args.fail_above is not None and g[column].mean() > args.fail_above:
            failures.append(f"{trait}: dataset {column} {g[column].mean():.3f} > {args.fail_above}")
        if args.fail_sample_above is not None and (g[column] > args.fail_sample_above).any():
            n = int((g[column] > args.fail_sample_above).sum())
            failures.append(f"{trait}: {n} samples with {column} > {args.fail_sample_above}")
    for failure in failures:
        print(f"pvlens screen: threshold exceeded: {failure}", file=sys.stderr)
    return 3 if failures else 0


def _count(text: str) -> str:
    if text != "all" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, verify and convert offline models (default: PVLENS_MODEL)")
    fetch.add_argument("models", nargs="*", help=f"any of: {', '.join(registry.OFFLINE_MODELS)}")
    info = sub.add_parser("info", help="load a model and print its shape, fingerprint and load time")
    info.add_argument("model", nargs="?")
    sub.add_parser("models", help="list the known model names")
    from pvlens.methods.capability import DEFAULT_N, FAST_N, TASKS

    cap = sub.add_parser("capability", help="zero-shot cloze accuracy on MMLU, ARC-Easy/Challenge, HellaSwag, PIQA")
    cap.add_argument("model", nargs="?")
    cap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    cap.add_argument("-n", "--n", type=_count, default=None,
                     help=f"items per task, or 'all' (default {DEFAULT_N}; {FAST_N} with PVLENS_FAST=1)")
    cap.add_argument("--seed", type=int, default=0, help="subsample seed (default 0)")
    cap.add_argument("--batch-size", type=int, default=16)
    cap.add_argument("--json", help="also write the results to this JSON file")
    gen = sub.add_parser("generate-trait", help="write a new trait's artifacts with an LLM (PVLENS_GENERATOR_MODEL)")
    gen.add_argument("name", help="lower-case trait name, e.g. 'curious'")
    text = gen.add_mutually_exclusive_group(required=True)
    text.add_argument("--description", help="one paragraph saying what the trait is")
    text.add_argument("--description-file", help="a text file holding the description")
    gen.add_argument("--question-instruction", default="", help="extra guidance for the 40 questions")
    gen.add_argument("--out", required=True, help="the trait file to write (FILE.json)")
    gen.add_argument("--model", help="generator model (default: PVLENS_GENERATOR_MODEL)")
    gen.add_argument("--base-url", help="OpenAI-compatible server (default: PVLENS_API_BASE_URL / OPENAI_BASE_URL)")
    gen.add_argument("--attempts", type=int, default=3, help="tries before giving up on malformed answers")
    gen.add_argument("--seed", type=int, default=0, help="seed for the request and the 20/20 question split")
    val = sub.add_parser("judge-validate",
                         help="the offline judge's AUC and rank correlation on external labelled data")
    val.add_argument("--limit", type=int, default=None, help="at most this many items per dataset and class")
    ext = sub.add_parser("extract", help="extract a persona vector: rollouts, judge, filter, mean difference")
    ext.add_argument("trait", help="a shipped trait name or a trait .json file")
    ext.add_argument("--model", help="default: PVLENS_MODEL or smollm2-135m-instruct")
    ext.add_argument("--n-per-question", type=int, default=None, help="rollouts per (pair, question); default 10")
    ext.add_argument("--max-new-tokens", type=int, default=None)
    ext.add_argument("--questions", type=int, default=None, help="use the first N extraction questions")
    ext.add_argument("--seed", type=int, default=0)
    ext.add_argument("--variant", default="response_avg", choices=["response_avg", "prompt_avg", "prompt_last"])
    ext.add_argument("--out", help="save the chosen variant's vectors to this .safetensors file")
    scr = sub.add_parser("screen", help="score training data by projection difference (ΔP) before finetuning")
    scr.add_argument("data", help="chat-format JSONL: one {\"messages\": [...]} per line (optional \"id\")")
    scr.add_argument("--trait", action="append", required=True, help="a shipped trait or trait .json (repeatable)")
    scr.add_argument("--model", help="default: PVLENS_MODEL or smollm2-135m-instruct")
    scr.add_argument("--layer", type=int, help="probe layer (default: the book's steering layer for the trait)")
    scr.add_argument("--vector", help="a .safetensors persona vector (pvlens extract --out) instead of extracting")
    scr.add_argument("--proxy", action="store_true", help="prompt-only proxy: no base-model responses, no generation")
    scr.add_argument("--top", type=int, default=10, help="show the N highest-scoring samples (default 10)")
    scr.add_argument("--out", help="write per-sample scores to FILE.csv or FILE.parquet")
    scr.add_argument("--judge", action="store_true", help="also score each response with the trait judge")
    scr.add_argument("--fail-above", type=float, help="exit 3 when a trait's dataset-level score exceeds this")
    scr.add_argument("--fail-sample-above", type=float, help="exit 3 when any sample's score exceeds this")
    scr.add_argument("--engine", choices=["local", "ray"], default="local")
    scr.add_argument("--ray-address", help="Ray cluster address ('auto', 'ray://host:10001'); default: local Ray")
    scr.add_argument("--replicas", type=int, default=1, help="model replicas on Ray (default 1)")
    scr.add_argument("--base-url", help="take base responses from this OpenAI-compatible server (vLLM)")
    scr.add_argument("--base-model", help="the served base model's name (default PVLENS_ROLLOUT_MODEL)")
    scr.add_argument("--max-tokens", type=int, default=2048, help="skip samples longer than this (default 2048)")
    scr.add_argument("--max-batch-tokens", type=int, default=8192, help="padded tokens per forward pass")
    scr.add_argument("--chunk-size", type=int, default=64, help="samples per unit of work / log flush")
    scr.add_argument("--base-max-new-tokens", type=int, default=128, help="length of base responses (greedy)")
    scr.add_argument("--cache", help="results log to resume from (default: under the pvlens cache)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            _fetch(args.models)
        elif args.command == "info":
            _info(args.model)
        elif args.command == "capability":
            _capability(args)
        elif args.command == "generate-trait":
            _generate_trait(args)
        elif args.command == "judge-validate":
            _judge_validate(args)
        elif args.command == "extract":
            _extract(args)
        elif args.command == "screen":
            return _screen(args)
        else:
            print("\n".join(registry.known_models()))
    except PVLensError as err:
        print(f"pvlens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
