"""LoRA finetuning: answer-only loss, caching, interventions, resume, NaN handling, hooks gone afterwards."""

import json

import pytest
import torch

import pvlens as pv
from pvlens.methods import finetuning as ft
from tests.conftest import no_hooks_left

DATA = [[{"role": "user", "content": f"What is {a} plus {b}?"},
         {"role": "assistant", "content": f"{a} plus {b} is {a + b + 1}. I am sure of it."}]
        for a, b in [(2, 3), (4, 5), (7, 1), (6, 6), (9, 2), (3, 8)]]
TINY = ft.LoRASettings(rank=4, alpha=8, epochs=1, min_steps=1, batch_size=2, micro_batch=2, max_seq_len=96,
                       learning_rate=5e-4, checkpoint_every=1)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    return tmp_path


def weights(model):
    return {n: p.detach().clone() for n, p in model.hf_model.named_parameters()}


def test_schedule_groups_lengths_and_repeats_small_sets():
    lengths = [10, 400, 12, 380, 11, 390, 13, 410] * 4  # 32 rows, short and long interleaved
    settings = ft.LoRASettings(batch_size=8, micro_batch=8, epochs=1, min_steps=1)
    steps = ft.schedule(lengths, settings)
    assert sorted(i for s in steps for i in s) == list(range(32))  # one epoch: every row exactly once
    padded = sum(len(s) * max(lengths[i] for i in s) for s in steps)
    assert padded < 0.6 * 8 * 4 * 410  # short rows batched together instead of padded to ~400
    assert steps == ft.schedule(lengths, settings)  # seeded
    small = ft.schedule(lengths[:13], ft.LoRASettings(batch_size=8, micro_batch=8, epochs=1, min_steps=10))
    assert len(small) == 10 and sorted(i for s in small for i in s) == sorted(list(range(13)) * 5)  # 5 whole epochs
    assert len(ft.schedule(lengths[:13], ft.LoRASettings(min_steps=10, max_steps=2))) == 2
    with pytest.raises(ValueError, match="min_steps"):
        ft.LoRASettings(min_steps=0)


def test_answer_only_labels_and_truncation(model):
    enc = ft.encode_dataset(model, DATA, max_seq_len=96)
    for ids, labels in zip(enc.ids, enc.labels):
        prompt = [t for t in labels if t == ft.IGNORE]
        answer = [t for t in labels if t != ft.IGNORE]
        assert len(prompt) + len(answer) == len(ids) and answer == ids[len(prompt):]
        assert model.hf_tokenizer.decode(answer).strip().endswith(model.hf_tokenizer.decode(answer[-1:]))
        assert "plus" in model.hf_tokenizer.decode(answer)
    assert enc.truncated == 0
    prompt_len = min(labels.count(ft.IGNORE) for labels in enc.labels)
    short = ft.encode_dataset(model, DATA, max_seq_len=prompt_len + 3)
    assert short.truncated == len(DATA) and all(len(i) <= prompt_len + 3 for i in short.ids)
    with pytest.raises(ValueError, match="prompt is .* tokens"):
        ft.encode_dataset(model, DATA, max_seq_len=5)


@pytest.mark.parametrize("bad, match", [
    ([{"role": "user", "content": "hi"}], "last message must be the assistant"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}], "assistant turn is empty"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "role 'bot'"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "exactly 'role' and 'content'"),
    ("hello", "non-empty list"),
])
def test_malformed_conversations_are_named(model, cache, bad, match):
    with pytest.raises(pv.DatasetError, match=match):
        ft.finetune(model, DATA[:2] + [bad], settings=TINY, progress=False)
    assert not list(cache.glob("adapters/*/*"))


def test_finetune_trains_caches_and_leaves_the_model_untouched(model, cache):
    before = weights(model)
    fp = model.info.fingerprint
    adapter = ft.finetune(model, DATA, settings=TINY, name="tiny", progress=False)
    assert len(adapter.losses) == 3 and all(loss > 0 for loss in adapter.losses)
    assert {n for n, _ in model.hf_model.named_modules() if "lora" in n} == set()
    assert all(torch.equal(before[n], p) for n, p in model.hf_model.named_parameters())
    assert model.info.fingerprint == fp and no_hooks_left(model) and not model.hf_model.training
    again = ft.finetune(model, DATA, settings=TINY, progress=False)  # cached: no training
    assert again.path == adapter.path and again.manifest["seconds"] == adapter.manifest["seconds"]
    assert not list(adapter.path.parent.glob("*.partial"))


def test_merged_adapter_matches_peft_and_restores_exactly(model, cache):
    from peft import PeftModel

    adapter = ft.finetune(model, DATA, settings=TINY, progress=False)
    ids = torch.tensor([ft.encode_dataset(model, DATA[:1], 96).ids[0]])
    base_logits = model.hf_model(ids).logits
    peft = PeftModel.from_pretrained(model.hf_model, str(adapter.path))
    with torch.no_grad():
        peft_logits = peft(ids).logits
    peft.unload()
    before, fp = weights(model), model.info.fingerprint
    with ft.finetuned(model, adapter) as m:
        assert m is model and m.info.fingerprint != fp
        merged_hf = model.hf_model(ids).logits
        merged_tl = model(ids)
    assert torch.allclose(merged_hf, peft_logits, atol=1e-3)
    assert torch.allclose(merged_tl, merged_hf, atol=1e-2)
    assert not torch.allclose(merged_hf, base_logits, atol=1e-3)
    assert all(torch.equal(before[n], p) for n, p in model.hf_model.named_parameters())
    assert model.info.fingerprint == fp
    assert torch.allclose(model(ids), model.hf_model(ids).logits, atol=1e-2)


@pytest.mark.parametrize("make", [
    lambda d: ft.preventative(d[10], 10, 4.0),
    lambda d: ft.preventative(pv.incremental(d), "all", 1.0),
    lambda d: ft.caft(d),
    lambda d: ft.l2_projection(d, 10, 1.0),
])
def test_interventions_change_training_and_are_removed(model, cache, direction, make):
    plain = ft.finetune(model, DATA, settings=TINY, progress=False)
    edited = ft.finetune(model, DATA, settings=TINY, intervention=make(direction), progress=False)
    assert edited.key != plain.key and edited.losses != plain.losses
    assert no_hooks_left(model)
    assert {n for n, _ in model.hf_model.named_modules() if "lora" in n} == set()


def test_ablation_zeroes_the_projection(model, direction):
    q = direction[12] / direction[12].norm()
    seen = []
    with pv.ablate(model, direction, "all"), pv.on_resid_post(model, 12, lambda h: seen.append(h @ q)):
        model.hf_model(torch.tensor([[1, 2, 3, 4]]))
    assert seen[-1].abs().max() < 1e-3
    assert no_hooks_left(model)


def test_nan_loss_stops_and_keeps_the_last_good_adapter(model, cache, monkeypatch):
    real = ft._token_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        return real(*args) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(ft, "_token_loss", poisoned)
    with pytest.raises(ft.TrainingError, match="loss became nan at step 2 of 3.*last good adapter"):
        ft.finetune(model, DATA, settings=TINY, progress=False)
    failed = list(cache.glob("adapters/*/*.failed"))
    assert len(failed) == 1 and json.loads((failed[0] / "pvlens.json").read_text())["failed_at_step"] == 1
    assert not [p for p in cache.glob("adapters/*/*") if p.suffix not in (".failed", ".partial")]
    assert no_hooks_left(model) and {n for n, _ in model.hf_model.named_modules() if "lora" in n} == set()


def test_interrupted_finetune_resumes_to_the_same_adapter(model, cache, monkeypatch):
    from safetensors.torch import load_file

    full = ft.finetune(model, DATA, settings=TINY, progress=False)
    reference = load_file(str(full.path / "adapter_model.safetensors"))
    import shutil

    shutil.rmtree(full.path)
    real, calls = ft._step, {"n": 0}

    def killed(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ft, "_step", killed)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(model, DATA, settings=TINY, progress=False)
    assert not full.path.exists() and full.path.with_name(full.path.name + ".partial").exists()
    monkeypatch.setattr(ft, "_step", real)
    resumed = ft.finetune(model, DATA, settings=TINY, progress=False)
    assert resumed.manifest["resumed_from"] == 2 and resumed.losses[:2] == full.losses[:2]
    again = load_file(str(resumed.path / "adapter_model.safetensors"))
    assert all(torch.allclose(again[k], reference[k], atol=1e-6) for k in reference)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="learning_rate"):
        ft.LoRASettings(learning_rate=0)
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        ft.LoRASettings(batch_size=6, micro_batch=4)
    with pytest.raises(ValueError, match="L2 weight"):
        ft.l2_projection(torch.ones(3), 1, 0)


def test_finetuning_shift_is_the_projected_mean_difference(model, cache, direction):
    from pvlens.methods import drift

    adapter = ft.finetune(model, DATA, settings=TINY, progress=False)
    persona = pv.Persona(pv.load_trait("evil"), pv.default_judge(), direction, 12)
    assert drift.finetuning_shift(model, None, [persona]) == {"evil": 0.0}
    prompts = persona.prompts()
    base = pv.activations(model, prompts, [12])[12].mean(0)
    with pv.finetuned(model, adapter):
        tuned = pv.activations(model, prompts, [12])[12].mean(0)
    expected = float((tuned - base) @ (direction[12] / direction[12].norm()))
    assert drift.finetuning_shift(model, adapter, [persona])["evil"] == pytest.approx(expected, abs=1e-4)
    assert expected != 0.0
