"""The ``pvlens`` command line: ``pvlens fetch [MODEL...]``, ``pvlens info [MODEL]`` and
``pvlens generate-trait NAME --description TEXT --out FILE.json``."""

from __future__ import annotations

import argparse
import sys

from pvlens import registry
from pvlens.config import default_model_name
from pvlens.errors import PVLensError


def _fetch(names: list[str]) -> None:
    for name in names or [default_model_name()]:
        spec = registry.resolve(name)
        if not isinstance(spec, registry.OfflineModel):
            print(f"{name}: not an offline model; it loads from the Hugging Face hub or its cache")
            continue
        path = registry.ensure_converted(spec)
        print(f"{spec.name}: ready at {path}")


def _info(name: str | None) -> None:
    from pvlens.models import describe, load_model

    model = load_model(name)
    print(describe(model))
    print({k: round(v, 2) for k, v in model.info.load_seconds.items()})


def _generate_trait(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pvlens.generator import generate_artifacts

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, verify and convert offline models (default: PVLENS_MODEL)")
    fetch.add_argument("models", nargs="*", help=f"any of: {', '.join(registry.OFFLINE_MODELS)}")
    info = sub.add_parser("info", help="load a model and print its shape, fingerprint and load time")
    info.add_argument("model", nargs="?")
    sub.add_parser("models", help="list the known model names")
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
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            _fetch(args.models)
        elif args.command == "info":
            _info(args.model)
        elif args.command == "generate-trait":
            _generate_trait(args)
        else:
            print("\n".join(registry.known_models()))
    except PVLensError as err:
        print(f"pvlens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
