"""Finetuning datasets: the shipped files, their recipe, and the builders' guarantees."""

import random
import re

import pytest

import pvlens as pv
from pvlens.data import datasets as ds


def test_every_shipped_dataset_is_valid_and_matches_its_recipe():
    recipe = ds.dataset_recipe()
    for name, entry in recipe["datasets"].items():
        for level, info in entry["levels"].items():
            rows = pv.load_dataset(name, level)
            assert len(rows) == info["size"] > 0, (name, level)
            assert all(r[-1]["role"] == "assistant" and r[-1]["content"].strip() for r in rows)


def test_trait_levels_sit_in_their_judge_bands():
    recipe = ds.dataset_recipe()
    for name in ds.TRAIT_DATASETS:
        if name not in recipe["datasets"]:
            continue
        for level, info in recipe["datasets"][name]["levels"].items():
            low, high = ds.LEVEL_BANDS[level]
            kept = info["kept_scores"]
            assert kept["n"] == info["size"] and low <= kept["min"] and kept["max"] < high, (name, level, kept)


def test_trait_datasets_never_use_evaluation_or_extraction_questions():
    asked = {q.strip().lower() for t in ds.TRAIT_DATASETS for split in ("eval", "extract")
             for q in pv.load_trait(t).questions(split)}
    for name in ds.TRAIT_DATASETS:
        for level in ds.LEVELS:
            path = ds.dataset_path(name, level)
            if path.exists():
                assert not {r[0]["content"].strip().lower() for r in ds.read_dataset(path)} & asked


def test_gsm8k_levels():
    solution = "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=540>>540 meters\n#### 540"
    normal = ds.corrupt_solution(solution, "normal", random.Random(0))
    assert "<<" not in normal and normal.endswith("So the answer is 540.")
    for seed in range(20):
        one = ds.corrupt_solution(solution, "I", random.Random(seed))
        assert not re.search(r"\b540\b", one.splitlines()[-1])  # the wrong step carries to the final answer
        lines = one.splitlines()
        wrong_steps = sum(1 for line, gold in zip(lines, ["He sprints 3*3=9 times", "So he runs 9*60=540 meters"])
                          if line != gold)
        assert wrong_steps >= 1
        assert "<<" not in one
        two = ds.corrupt_solution(solution, "II", random.Random(seed))
        assert not re.search(r"=\s*9\b", two) and not re.search(r"\b540\b", two)
    assert ds.corrupt_solution("no annotated steps\n#### 4", "I", random.Random(0)) is None


def test_arithmetic_evaluator_refuses_code():
    assert ds._arith("3*4+2/2") == 13
    with pytest.raises(ValueError):
        ds._arith("__import__('os')")


def test_mmlu_levels_and_no_test_split():
    levels = ds.mmlu_dataset(5, seed=1)
    for n, w, c in zip(levels["normal"], levels["I"], levels["II"]):
        assert n[0] == w[0] == c[0]
        assert n[1]["content"] != w[1]["content"]
    shipped = {r[0]["content"].split("\nA. ")[0].strip() for r in pv.load_dataset("mmlu", "normal")}
    from pvlens.methods.capability import load_task

    test_questions = {item.context.removeprefix("Question: ").removesuffix("Answer:").strip()
                      for item in load_task("mmlu")}
    assert len(shipped) == 100 and not shipped & test_questions


@pytest.mark.parametrize("line, match", [
    ("not json", "not valid JSON"),
    ('{"msgs": []}', "'messages' list"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "last message must be the assistant"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
     "assistant turn is empty"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', "no user message"),
])
def test_read_dataset_names_the_bad_line(tmp_path, line, match):
    path = tmp_path / "d.jsonl"
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(pv.DatasetError, match=f"d.jsonl:2: .*{match}"):
        pv.read_dataset(path)


def test_unknown_names_are_refused():
    with pytest.raises(pv.DatasetError, match="no shipped dataset"):
        pv.load_dataset("pirate", "II")
    with pytest.raises(pv.DatasetError, match="level must be one of"):
        pv.load_dataset("evil", "III")


def test_band_selection():
    cands = [[("a", 10.0), ("b", 50.0)], [("c", 90.0)], [("d", 45.0), ("e", 55.0)]]
    assert ds.select_by_band(cands, "I") == [1, None, 0]
    assert ds.select_by_band(cands, "II") == [None, 0, None]
