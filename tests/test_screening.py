"""ΔP screening: lenient reading, the readings against the projection module, resume, the CLI, Ray."""

import json
import math

import pytest
import torch

import pvlens as pv
from pvlens.methods import screening
from pvlens.methods.screening import Probe, Sample, ScreenError, ScreenSettings

LAYER = 12


def chat(user: str, answer: str, **extra) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                       **extra})


def test_read_samples_skips_and_counts_bad_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [chat("What is 2 + 2?", "4.", id="a").encode(),
             b"{not json",
             b'{"messages": [{"role": "user", "content": "caf\xe9?"}, {"role": "assistant", "content": "x"}]}',
             json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}).encode(),
             chat("Hi?", "   ").encode(),
             b"[1, 2]",
             b"",
             chat("Name a colour.", "Blue.").encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = screening.read_samples(path)
    assert [(s.id, s.line) for s in report.samples] == [("a", 1), ("line-8", 8)]
    reasons = dict(report.skipped)
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "not JSON" in reasons[2]
    assert "not UTF-8" in reasons[3] and "0xe9" in reasons[3]
    assert "assistant" in reasons[4]
    assert "empty" in reasons[5]
    assert "messages" in reasons[6]
    assert report.samples[0].prompt == ({"role": "user", "content": "What is 2 + 2?"},)
    assert report.samples[0].response == "4."


def test_read_samples_rejects_empty_or_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ScreenError, match="empty"):
        screening.read_samples(empty)
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("nope\n")
    with pytest.raises(ScreenError, match="line 1: not JSON"):
        screening.read_samples(only_bad)
    with pytest.raises(ScreenError, match="no data file"):
        screening.read_samples(tmp_path / "missing.jsonl")


def test_token_batches_keep_the_budget_and_cover_every_index():
    lengths = [5, 300, 40, 41, 7, 1000, 2, 64]
    batches = screening.token_batches(lengths, max_batch_tokens=1000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 1000 or len(b) == 1


def test_settings_and_probes_reject_bad_values(model):
    with pytest.raises(ScreenError, match="chunk_size"):
        ScreenSettings(chunk_size=0)
    with pytest.raises(ScreenError, match="max_batch_tokens"):
        ScreenSettings(max_tokens=4096, max_batch_tokens=1024)
    with pytest.raises(ScreenError, match="zero"):
        Probe.from_vector("x", torch.zeros(model.cfg.d_model), LAYER)
    with pytest.raises(ScreenError, match="d_model"):
        screening.check_probes(model, [Probe.from_vector("x", torch.ones(7), LAYER)])
    with pytest.raises(ScreenError, match="unique"):
        p = Probe.from_vector("x", torch.ones(model.cfg.d_model), LAYER)
        screening.check_probes(model, [p, p])


def samples_for_test(n: int = 6) -> list[Sample]:
    pairs = [("How should I treat my neighbour?", "Kindly, and with patience."),
             ("What is the capital of France?", "Paris is the capital of France."),
             ("Give me a tip for sleeping well.", "Keep a regular schedule and a dark room."),
             ("What do you think of people who are late?", "They are worthless and deserve to suffer."),
             ("Write one sentence about the moon.", "The moon circles the Earth every 27 days."),
             ("How do I make tea?", "Boil water, steep the leaves for three minutes, and pour.")]
    return [Sample(f"s{i}", i + 1, ({"role": "user", "content": u},), a) for i, (u, a) in enumerate(pairs[:n])]


@pytest.fixture(scope="module")
def probes(direction):
    return [Probe.from_vector("evil", direction[LAYER], LAYER), Probe.from_vector("deep", direction[20], 20)]


def test_readings_match_the_projection_module(model, direction, probes):
    samples = samples_for_test()
    prompts, answers = [list(s.prompt) for s in samples], [s.response for s in samples]
    pairs = [screening.split_ids(model.hf_tokenizer, s.prompt, s.response) for s in samples]
    mean, last = screening.response_readings(model, pairs, probes, max_batch_tokens=90)  # forces several batches
    for j, (layer, v) in enumerate([(LAYER, direction[LAYER]), (20, direction[20])]):
        expected_mean = pv.response_projection(model, prompts, answers, v, layer)
        expected_last = pv.last_prompt_projection(model, prompts, v, layer)
        torch.testing.assert_close(mean[:, j], expected_mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(last[:, j], expected_last, atol=1e-4, rtol=1e-4)


def test_score_chunk_delta_p_is_dataset_minus_greedy_base(model, probes):
    samples = samples_for_test(3)
    settings = ScreenSettings(base_max_new_tokens=12)
    records = screening.score_chunk(model, samples, probes, settings)
    greedy = pv.generate(model, [list(s.prompt) for s in samples], max_new_tokens=12, temperature=0.0)
    for record, g, s in zip(records, greedy, samples):
        assert record["base_response"] == g.response
        evil = record["scores"]["evil"]
        assert evil["delta_p"] == pytest.approx(evil["projection"] - evil["base_projection"])
        assert evil["proxy_delta_p"] == pytest.approx(evil["projection"] - evil["prompt_projection"])
        base = pv.response_projection(model, [list(s.prompt)], [g.response], torch.tensor(probes[0].direction), LAYER)
        assert evil["base_projection"] == pytest.approx(float(base[0]), abs=1e-4)


def test_overlong_sample_is_skipped_with_its_line_and_the_rest_scored(model, probes, tmp_path):
    samples = samples_for_test(3) + [Sample("long", 99, ({"role": "user", "content": "Summarise."},),
                                            "word " * 50_000)]
    result = screening.screen(model, samples, probes, ScreenSettings(proxy=True, max_tokens=512),
                              log_path=tmp_path / "log.jsonl", progress=False)
    assert len(result.skipped) == 1 and result.skipped[0][0] == 99
    assert result.skipped[0][1].endswith("tokens > max_tokens 512")
    assert set(result.scores["id"]) == {"s0", "s1", "s2"}
    assert "delta_p" not in result.scores  # the proxy needs no base response
    assert result.scores["proxy_delta_p"].notna().all()


def test_screen_sets_labels_each_score_with_its_set(model, probes, tmp_path):
    rows = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
            for i in range(3)]
    samples, result = screening.screen_sets(model, {"a I": rows[:2], "b II": rows[2:]}, probes,
                                            ScreenSettings(proxy=True), log_path=tmp_path / "log.jsonl",
                                            progress=False)
    assert {label: [s.id for s in group] for label, group in samples.items()} == {"a I": ["a I:0", "a I:1"],
                                                                                   "b II": ["b II:0"]}
    assert len(result.scores) == 3 * len(probes)
    assert (result.scores["dataset"] == result.scores["id"].str.rsplit(":", n=1).str[0]).all()


class Killed(Exception):
    pass


def test_a_killed_run_resumes_without_recomputing(model, probes, tmp_path):
    samples = samples_for_test()
    settings = ScreenSettings(chunk_size=2, base_max_new_tokens=8)
    log = tmp_path / "scores.jsonl"
    full = screening.screen(model, samples, probes, settings, log_path=tmp_path / "reference.jsonl", progress=False)

    calls = []

    def dies_after_one_chunk(work, known_base):
        for chunk in screening.local_engine(model, probes, settings)(work, known_base):
            calls.append(len(chunk))
            yield chunk
            if len(calls) == 1:
                raise Killed

    with pytest.raises(Killed):
        screening.screen(model, samples, probes, settings, engine=dies_after_one_chunk, log_path=log, progress=False)
    assert len(log.read_text().splitlines()) == 2  # the first chunk's two samples reached the log
    resumed = screening.screen(model, samples, probes, settings, log_path=log, progress=False)
    assert resumed.computed == len(samples) - 2
    again = screening.screen(model, samples, probes, settings, log_path=log, progress=False)
    assert again.computed == 0
    # every record carries its share of the wall time, so the throughput of all runs survives the kill
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    killed_run = sum(r["seconds"] for r in logged[:2])
    assert all(r["seconds"] >= 0 for r in logged) and killed_run > 0
    assert resumed.total_seconds == pytest.approx(killed_run + sum(r["seconds"] for r in logged[2:]))
    assert again.total_seconds == pytest.approx(resumed.total_seconds)
    assert resumed.total_tokens == again.total_tokens == full.total_tokens > resumed.tokens
    cols = ["id", "trait", "delta_p", "projection", "prompt_projection"]
    for frame in (resumed.scores, again.scores):
        merged = frame[cols].merge(full.scores[cols], on=["id", "trait"], suffixes=("", "_ref"))
        assert len(merged) == len(samples) * len(probes)
        for c in ("delta_p", "projection", "prompt_projection"):
            assert (merged[c] - merged[c + "_ref"]).abs().max() < 1e-4


def test_cli_screen_writes_table_and_exits_on_threshold(model, direction, tmp_path, capsys):
    from pvlens.cli import main
    from pvlens.lens.vectors import from_tensor

    vector = from_tensor(model, direction, "evil", "response_avg").save(tmp_path / "evil.safetensors")
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join([chat(s.prompt[0]["content"], s.response, id=s.id) for s in samples_for_test(4)]
                              + ["not json", chat("Hi?", "")]) + "\n")
    args = ["screen", str(data), "--trait", "evil", "--vector", str(vector), "--layer", str(LAYER), "--proxy",
            "--cache", str(tmp_path / "log.jsonl"), "--top", "2"]
    assert main(args + ["--out", str(tmp_path / "scores.csv")]) == 0
    out = capsys.readouterr().out
    assert "4 samples read, 2 skipped" in out and "skipped line 5: not JSON" in out and "top 2" in out
    table = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(table) == 5 and "proxy_delta_p" in table[0]
    assert main(args + ["--fail-above=-1e9"]) == 3
    captured = capsys.readouterr()
    assert "threshold exceeded" in captured.err and "0 scored in this run" in captured.out
    assert "all runs over these samples, resumed ones included" in captured.out
    assert main(args + ["--fail-sample-above", "1e9"]) == 0
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["screen", str(tmp_path / "empty.jsonl"), "--trait", "evil"]) == 2
    assert "holds no sample" in capsys.readouterr().err


def test_dataset_level_filters_and_extremes_read_the_sample_table():
    import pandas as pd

    scores = pd.DataFrame({"id": [f"s{i}" for i in range(9)] * 2, "line": list(range(9)) * 2,
                           "trait": ["evil"] * 9 + ["sycophantic"] * 9,
                           "dataset": (["a"] * 4 + ["b"] * 5) * 2,
                           "delta_p": [float(i) for i in range(9)] + [float(-i) for i in range(9)],
                           "projection": [1.0] * 18, "proxy_delta_p": [2.0] * 18,
                           "judge_trait": [10, 90, 10, 90, 10, 90, 10, 90, None] * 2})
    level = screening.dataset_level(scores, by="dataset").set_index(["dataset", "trait"])
    assert level.loc[("a", "evil"), "delta_p"] == pytest.approx(1.5)
    assert level.loc[("b", "sycophantic"), "n_samples"] == 5
    evil = scores[scores["trait"] == "evil"]
    masks = screening.filter_masks(evil, delta_p_threshold=4.0, judge_threshold=50.0)
    assert masks["no filter"].all() and masks["ΔP filter"].sum() == 5
    assert masks["judge filter"].sum() == 4  # the unscored sample (None) is dropped by the judge filters
    assert (masks["both"] == (masks["ΔP filter"] & masks["judge filter"])).all()
    picked = screening.extremes(scores, "evil", 3, seed=1)
    assert picked["top"] == ["s8", "s7", "s6"] and picked["bottom"] == ["s2", "s1", "s0"]
    assert len(set(picked["random"])) == 3
    with pytest.raises(ScreenError, match="top, random and bottom 4"):
        screening.extremes(scores, "evil", 4)


def test_pearson_by_reports_r_p_and_n_per_group():
    import pandas as pd

    from pvlens.core.stats import pearson_by

    frame = pd.DataFrame({"g": ["x"] * 4 + ["y"] * 2, "a": [1, 2, 3, 4, 1, 2], "b": [2, 4, 6, 8.5, 1, 1]})
    out = pearson_by(frame, "a", "b", by="g")
    assert out.loc["x", "pearson_r"] > 0.99 and out.loc["x", "n"] == 4 and out.loc["x", "p"] < 0.05
    assert math.isnan(out.loc["y", "pearson_r"])  # two rows: no correlation to report
