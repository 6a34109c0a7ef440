"""Cache keys are the contract with every cache already on disk: these values were computed by the code before
the package was split into layers (commit adce589), and every cache written since must still be found.

If one of these fails, a change altered a key: every rollout, judge score, adapter or screen cached under the
old key would be silently recomputed. Change a key only on purpose, with a format version bump.
"""

import os
from pathlib import Path

import torch

import pvlens as pv
from pvlens.core.keys import digest, tensor_digest
from pvlens.methods import finetuning as ft
from pvlens.methods import screening
from pvlens.traits.artifacts import artifacts_hash

SMOLLM2_FINGERPRINT = "10ecb8a48cd1d7b8"


class FixedJudge:
    name = "fake-judge"

    def judge(self, artifacts, questions, answers, progress=True):
        return [pv.Judgement(70.0, 90.0) for _ in answers]


def test_hashes_of_values_are_pinned(model):
    v = torch.linspace(-1, 1, model.cfg.d_model)
    assert model.info.fingerprint == SMOLLM2_FINGERPRINT
    assert {t: artifacts_hash(pv.load_trait(t)) for t in ("evil", "sycophantic", "hallucinating")} == {
        "evil": "9f42e1bae94a", "sycophantic": "2370cec31bb2", "hallucinating": "283af272179f"}
    assert digest({"b": [1, 2], "a": "ü"}) == "6f800e0c38999c67"
    assert digest(["chunk", 0, 32, 1], 12) == "86c7dd304ed2"
    assert tensor_digest(v) == "faa130835289cd9f"
    assert digest(pv.Steering(v, 3, 0.5, "response", "resid").key()) == "50aa4d55ebb362d8"
    assert digest(pv.preventative(v, 3, 4.0).key()) == "d54a700df15f6038"
    encoded = ft.encode_dataset(model, pv.load_dataset("evil", "II")[:2], 64)
    assert ft.training_key(model, encoded, pv.LoRASettings(max_steps=1), None) == "1f8416c349b1e18f"


def test_cache_files_land_where_they_always_did(model, tmp_path, monkeypatch):
    """Rollouts, judge scores, vectors, answers, adapters and screens: the same paths as before the split."""
    models = pv.cache_dir("models")
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    (tmp_path / "models").symlink_to(models)
    v = torch.linspace(-1, 1, model.cfg.d_model)
    evil = pv.load_trait("evil")
    adapters = ft.adapter_folder(model, "k").relative_to(tmp_path)
    assert str(adapters) == f"adapters/smollm2-135m-instruct-{SMOLLM2_FINGERPRINT}/k"
    log = screening.results_log(model, [pv.Probe.from_vector("evil", v, 3)], pv.ScreenSettings())
    assert str(log.relative_to(tmp_path)) == f"screen/{SMOLLM2_FINGERPRINT}/565150e617429882.jsonl"
    frame = pv.sample_answers(model, evil, ["What is 2+2?"], max_new_tokens=2, progress=False)
    assert frame["key"][0] == "5f2ddb994f9ab522"
    pv.extract_persona(model, evil, FixedJudge(), questions=1, n_per_question=1, max_new_tokens=2, batch_size=4,
                       trait_threshold=0, coherence_threshold=0, progress=False)
    pv.trait_expression(model, evil, FixedJudge(), ["What is 2+2?"], max_new_tokens=2, progress=False)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                   if p.is_file() and not str(p).startswith(str(tmp_path / "models")) and "resid_norms" not in str(p))
    folder = f"smollm2-135m-instruct-{SMOLLM2_FINGERPRINT}/evil-9f42e1bae94a"
    vectors = f"extraction/{folder}/vectors-21a76214ab00"
    assert files == [
        f"evaluation/{folder}/answers.jsonl",
        f"evaluation/{folder}/judge-fake-judge-587223.jsonl",
        f"extraction/{folder}/judge-21e1b9ec7876-fake-judge-587223.jsonl",
        f"extraction/{folder}/rollouts-21e1b9ec7876.jsonl",
        f"{vectors}/evil_prompt_avg.safetensors",
        f"{vectors}/evil_prompt_last.safetensors",
        f"{vectors}/evil_response_avg.safetensors",
        f"{vectors}/manifest.json",
    ]
    assert os.environ["PVLENS_CACHE"] == str(tmp_path) and Path(models).exists()
