"""The ``pvlens`` command line: ``pvlens fetch [MODEL...]`` and ``pvlens info [MODEL]``."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, verify and convert offline models (default: PVLENS_MODEL)")
    fetch.add_argument("models", nargs="*", help=f"any of: {', '.join(registry.OFFLINE_MODELS)}")
    info = sub.add_parser("info", help="load a model and print its shape, fingerprint and load time")
    info.add_argument("model", nargs="?")
    sub.add_parser("models", help="list the known model names")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            _fetch(args.models)
        elif args.command == "info":
            _info(args.model)
        else:
            print("\n".join(registry.known_models()))
    except PVLensError as err:
        print(f"pvlens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
