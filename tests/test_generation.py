"""Generation: batched, left-padded, seeded, stops at the end of turn, monitors while it goes."""

import pytest
import torch

import pvlens as pv
from pvlens.lens.generation import end_of_turn_ids
from tests.conftest import QUESTIONS


def test_greedy_is_deterministic_and_batch_independent(model):
    batched = pv.generate(model, QUESTIONS, temperature=0, max_new_tokens=12)
    single = [pv.generate(model, [q], temperature=0, max_new_tokens=12)[0] for q in QUESTIONS]
    assert [g.response_ids for g in batched] == [g.response_ids for g in single]  # left padding is invisible
    assert [g.prompt for g in batched] == [pv.chat_text(model.hf_tokenizer, q) for q in QUESTIONS]


def test_seeded_sampling(model):
    first = pv.generate(model, QUESTIONS, max_new_tokens=12, seed=1)
    again = pv.generate(model, QUESTIONS, max_new_tokens=12, seed=1)
    other = pv.generate(model, QUESTIONS, max_new_tokens=12, seed=2)
    assert [g.response for g in first] == [g.response for g in again]
    assert [g.response for g in first] != [g.response for g in other]


def test_stops_at_end_of_turn(model):
    (gen,) = pv.generate(model, ["What is the capital of France? Answer in one word."], temperature=0,
                         max_new_tokens=48)
    assert gen.finished and 0 < len(gen.response_ids) < 48
    eos = set(end_of_turn_ids(model))
    assert not eos & set(gen.response_ids)
    assert model.hf_tokenizer.decode(gen.response_ids) == gen.response
    (capped,) = pv.generate(model, ["Write a long essay about rivers."], temperature=0, max_new_tokens=5)
    assert not capped.finished and len(capped.response_ids) == 5


def test_system_prompt_reaches_the_prompt(model):
    (gen,) = pv.generate(model, ["Hi"], system="You are a pirate.", temperature=0, max_new_tokens=2)
    assert "You are a pirate." in gen.prompt and "SmolLM" not in gen.prompt


def test_monitoring_matches_offline_projection(model, direction):
    layer = 15
    gens = pv.generate(model, QUESTIONS, temperature=0, max_new_tokens=8, monitor={layer: direction[layer]})
    offline = pv.last_prompt_projection(model, QUESTIONS, direction[layer], layer)
    online = torch.stack([g.projections[layer][0] for g in gens])
    assert torch.allclose(online, offline, atol=1e-3, rtol=1e-4)  # entry 0: the last prompt token
    for question, g in zip(QUESTIONS, gens):
        assert g.projections[layer].shape == (len(g.response_ids),)
        # entry i > 0 is response token i-1, as a teacher-forced pass reads it
        _, per_token = pv.token_projections(model, question, g.response, direction[layer], layer)
        n = min(len(per_token), len(g.response_ids)) - 1
        assert torch.allclose(g.projections[layer][1:n + 1], per_token[:n], atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("bad, match", [
    (dict(conversations=[]), "no prompts"),
    (dict(temperature=-1), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_bad_arguments(model, bad, match):
    kwargs = dict(conversations=["Hi"], max_new_tokens=2) | bad
    conversations = kwargs.pop("conversations")
    with pytest.raises(ValueError, match=match):
        pv.generate(model, conversations, **kwargs)


def test_bad_monitor_vector(model):
    with pytest.raises(ValueError, match="shape"):
        pv.generate(model, ["Hi"], max_new_tokens=2, monitor={3: torch.zeros(7)})
    with pytest.raises(ValueError, match="out of range"):
        pv.generate(model, ["Hi"], max_new_tokens=2, monitor={99: torch.ones(model.cfg.d_model)})


def test_complete_sentences_trims_budget_cuts_only():
    from pvlens.lens.generation import complete_sentences

    assert complete_sentences("Hello there, my friend. I think you should go to the") == "Hello there, my friend."
    assert complete_sentences('He said "I will not." Then he left and went') == 'He said "I will not."'
    assert complete_sentences("A finished answer! It ends here.") == "A finished answer! It ends here."
    assert complete_sentences("too short. and then the rest goes on") == "too short. and then the rest goes on"
    assert complete_sentences("First line of a list of things\n- second item that was cut") == \
        "First line of a list of things"
