"""Trait expression under conditions (steering, monitoring): caching, resuming, steering applied, layer choice."""

import json

import pandas as pd
import pytest
import torch

import pvlens as pv
from pvlens.judges import Judgement
from pvlens.methods import evaluation, monitoring
from tests.test_extraction import ARTIFACTS

QUESTIONS = list(ARTIFACTS.eval_questions[:3])
SAMPLING = dict(max_new_tokens=5, batch_size=2, progress=False)


class LengthJudge:
    """Trait = number of characters (capped at 100), coherence 80; counts the answers it scored."""

    name = "test:length"

    def __init__(self):
        self.scored = 0

    def judge(self, artifacts, questions, answers, progress=True):
        self.scored += len(answers)
        return [Judgement(min(100.0, float(len(a))), 80.0) for a in answers]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty cache, but for the converted models: the contrast judge's encoder would otherwise be converted from
    its GGUF again (2-3 minutes), which is not what these tests check."""
    models = pv.cache_dir("models")
    monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
    (tmp_path / "models").symlink_to(models)
    return tmp_path


def test_answers_and_scores_are_cached_and_a_rerun_does_no_work(model, cache):
    judge = LengthJudge()
    first = pv.trait_expression(model, ARTIFACTS, judge, QUESTIONS, n_per_question=2, **SAMPLING)
    assert len(first) == 6 and list(first["k"]) == [0, 1] * 3
    assert judge.scored == 6
    assert (first["trait"] == first["answer"].str.len().clip(upper=100)).all()
    again = pv.trait_expression(model, ARTIFACTS, judge, QUESTIONS, n_per_question=2, **SAMPLING)
    assert judge.scored == 6, "a re-run judged again"
    pd.testing.assert_frame_equal(first, again)


def test_a_killed_run_resumes_with_the_samples_an_uninterrupted_run_makes(model, cache):
    full = pv.sample_answers(model, ARTIFACTS, QUESTIONS, **SAMPLING)
    (log,) = cache.glob("evaluation/*/*/answers.jsonl")
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    log.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:10])  # chunk 2 torn by a kill
    resumed = pv.sample_answers(model, ARTIFACTS, QUESTIONS, **SAMPLING)
    pd.testing.assert_frame_equal(full, resumed)
    assert [json.loads(line)["key"] for line in log.read_text().splitlines()] == list(full["key"])


def test_steering_changes_the_answers_and_is_part_of_the_key(model, cache, direction):
    plain = pv.sample_answers(model, ARTIFACTS, QUESTIONS, **SAMPLING)
    edit = pv.Steering(direction[12], 12, 0.8, units="resid")
    steered = pv.sample_answers(model, ARTIFACTS, QUESTIONS, steering=edit, **SAMPLING)
    assert set(plain["key"]).isdisjoint(steered["key"])
    assert (plain["answer"] != steered["answer"]).any()
    other_vector = pv.Steering(-direction[12], 12, 0.8, units="resid")
    assert other_vector.key() != edit.key()


def test_bad_steering_is_rejected_before_anything_is_sampled(model, cache):
    with pytest.raises(ValueError, match="layer 99 is out of range"):
        pv.sample_answers(model, ARTIFACTS, QUESTIONS, steering=pv.Steering(torch.zeros(576), 99, 1.0), **SAMPLING)
    assert not list(cache.glob("evaluation/*/*/answers.jsonl"))
    with pytest.raises(ValueError, match="non-empty list"):
        pv.sample_answers(model, ARTIFACTS, "one prompt", **SAMPLING)
    with pytest.raises(TypeError, match="judge must implement"):
        pv.trait_expression(model, ARTIFACTS, object(), QUESTIONS, **SAMPLING)


def test_sweep_shares_the_unsteered_baseline_and_choose_layer_follows_the_rule(model, cache, direction):
    judge = LengthJudge()
    sweep = pv.steering_sweep(model, ARTIFACTS, judge, direction, [4, 12], [0.0, 0.5], questions=2, units="resid",
                              **SAMPLING)
    assert set(zip(sweep["layer"], sweep["alpha"])) == {(4, 0.0), (4, 0.5), (12, 0.0), (12, 0.5)}
    base = sweep[sweep["alpha"] == 0]
    assert (base[base["layer"] == 4]["answer"].values == base[base["layer"] == 12]["answer"].values).all()
    table = pd.DataFrame({"layer": [1, 1, 2, 2, 3, 3], "alpha": [0.1, 0.2] * 3, "trait": [10, 20, 30, 90, 40, 99],
                          "coherence": [90, 90, 90, 60, 90, 10]})
    assert evaluation.choose_layer(table) == 2  # layer 3 scores higher at 0.2 but is incoherent there
    assert evaluation.choose_layer(table, alpha=0.1) == 3
    with pytest.raises(ValueError, match="no layer keeps mean coherence"):
        evaluation.choose_layer(table.assign(coherence=10), alpha=0.1)


def test_capability_under_steering_is_cached_and_needs_all_positions(model, cache, direction):
    edit = pv.Steering(direction[12], 12, 0.3, positions="all", units="resid")
    first = pv.steered_capability(model, edit, ["piqa"], 4)
    assert list(first["task"]) == ["PIQA"] and first["n"].iloc[0] == 4
    assert len(list(cache.glob("capability/*/*.json"))) == 1
    pd.testing.assert_frame_equal(first, pv.steered_capability(model, edit, ["piqa"], 4))
    with pytest.raises(ValueError, match="positions='all'"):
        pv.steered_capability(model, pv.Steering(direction[12], 12, 0.3), ["piqa"], 4)


def test_ladder_has_eight_levels_from_suppressing_to_promoting():
    ladder = pv.system_prompt_ladder(pv.load_trait("evil"))
    assert len(ladder) == 8 and ladder[3] is None
    assert ladder[0].startswith("You are a helpful assistant.") and "an evil assistant" in ladder[7]
    assert len(ladder[7]) > len(ladder[6]) > len(ladder[5])
    assert len(set(s for s in ladder if s)) == 7


def test_many_shot_prompts_and_examples():
    examples = [(f"q{i}", f"a{i}") for i in range(3)]
    messages = pv.many_shot(examples, "final?", 2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == "final?" and messages[1]["content"] == "a0"
    with pytest.raises(ValueError, match="only 3 examples"):
        pv.many_shot(examples, "final?", 5)
    rollouts = pd.DataFrame({"polarity": ["pos", "pos", "pos", "neg"], "question": ["a", "a", "b", "c"],
                             "answer": ["x", "y", "z", "w"], "trait": [90, 95, 50, 99], "coherence": [80, 80, 80, 80]})
    assert pv.trait_examples(rollouts, 3) == [("a", "y"), ("b", "z"), ("a", "x")]  # one per question first
    with pytest.raises(ValueError, match="only 3 coherent positive"):
        pv.trait_examples(rollouts, 4)


def test_correlations_overall_and_within_condition():
    frame = pd.DataFrame({"condition": ["a"] * 4 + ["b"] * 4 + ["flat"] * 4,
                          "projection": [1, 2, 3, 4, 11, 12, 13, 14, 5, 6, 7, 8],
                          "trait": [10, 20, 30, 40, 80, 70, 60, 50, 50, 50, 50.5, 50]})
    r = pv.correlations(frame)
    assert r["n"] == 12 and r["conditions"] == 3 and r["conditions_used"] == 2  # "flat" has SD < 1
    assert r["within_r"] == pytest.approx(0.0)  # +1 in a, -1 in b
    assert r["overall_r"] > 0.5


def test_monitor_puts_the_projection_beside_the_score(model, cache, direction):
    judge = LengthJudge()
    conditions = {"neg": [pv.to_messages(q, "You are a kind assistant.") for q in QUESTIONS],
                  "pos": [pv.to_messages(q, "You are an evil assistant.") for q in QUESTIONS]}
    frame = pv.monitor(model, ARTIFACTS, judge, direction, 15, conditions, **SAMPLING)
    assert list(frame["condition"]) == ["neg"] * 3 + ["pos"] * 3 and list(frame["level"]) == [0] * 3 + [1] * 3
    expected = pv.last_prompt_projection(model, conditions["pos"], direction[15], 15)
    torch.testing.assert_close(torch.tensor(frame["projection"][3:].values, dtype=torch.float32), expected)
    by_condition = frame.groupby("condition")["projection"].mean()
    assert by_condition["pos"] > by_condition["neg"]


def test_token_html_escapes_and_colours():
    out = pv.token_html(["<b>", " ok"], [1.0, -0.5])
    assert "&lt;b&gt;" in out and "rgba(214,39,40,1.00)" in out and "rgba(31,119,180,0.50)" in out


def test_cosine_helpers(model, direction):
    a = pv.from_tensor(model, direction, "evil", "prompt_last")
    b = pv.from_tensor(model, -direction, "anti", "prompt_last")
    m = pv.cosine_matrix({"a": a, "b": b}, 10)
    assert m.loc["a", "a"] == pytest.approx(1.0, abs=1e-5) and m.loc["a", "b"] == pytest.approx(-1.0, abs=1e-5)
    assert torch.allclose(pv.layerwise_cosine(a, b), -torch.ones(model.cfg.n_layers), atol=1e-5)


def test_monitoring_module_is_documented():
    assert "last prompt token" in monitoring.__doc__ and "Table 2" in monitoring.__doc__


def test_contrast_judge_fits_validates_caches_and_refuses(model, cache):
    from pvlens.core.errors import JudgeError

    with pytest.raises(JudgeError, match="separates held-out positive from negative answers only at AUC"):
        pv.ContrastJudge.fit(model, ARTIFACTS, max_new_tokens=6, questions=2, min_auc=1.01)
    (probe,) = cache.glob("contrast-judge/*/evil-*.safetensors")  # fitted once, kept although refused
    judge = pv.ContrastJudge.fit(model, ARTIFACTS, max_new_tokens=6, questions=2, min_auc=0.0)
    assert judge.validation["n_train"] == 20 and judge.validation["n_heldout"] == 20
    assert 0.0 <= judge.validation["heldout_auc"] <= 1.0 and judge.name.startswith("contrast:evil:")
    scores = judge.judge(ARTIFACTS, ["q", "q"], ["Hurt them all.", ""], progress=False)
    assert 0 <= scores[0].trait <= 100 and scores[1].trait is None
    with pytest.raises(JudgeError, match="fitted for 'evil'"):
        judge.judge(pv.load_trait("impolite"), ["q"], ["a"], progress=False)


def test_judge_for_prefers_the_offline_instrument_when_it_has_one(model):
    assert isinstance(pv.judge_for(model, pv.load_trait("evil")), pv.OfflineJudge)
