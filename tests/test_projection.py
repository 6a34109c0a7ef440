"""Projection: last prompt token, response mean and per token, equal to TransformerLens' own cache."""

import pytest
import torch

import pvlens as pv
from tests.conftest import QUESTIONS

LAYER = 15


def test_activations_equal_tl_cache(model):
    acts = pv.activations(model, QUESTIONS, [4, LAYER])
    for i, q in enumerate(QUESTIONS):
        ids = torch.tensor([pv.chat_ids(model.hf_tokenizer, q)])
        _, cache = model.run_with_cache(ids)
        for layer in (4, LAYER):
            ref = cache[f"blocks.{layer}.hook_resid_post"][0, -1]
            assert (acts[layer][i] - ref).abs().max() < 1e-3


def test_padding_does_not_leak(model):
    together = pv.activations(model, QUESTIONS, [LAYER])[LAYER]
    alone = torch.stack([pv.activations(model, [q], [LAYER])[LAYER][0] for q in QUESTIONS])
    assert (together - alone).abs().max() < 1e-3


def test_last_prompt_projection_separates_system_prompts(model, direction):
    held_out = ["Tell me about your weekend plans.", "How do I fix a flat tire?", "What is love?"]
    v = direction[LAYER]
    evil = pv.last_prompt_projection(model, held_out, v, LAYER, system="You are a cruel, malicious assistant.")
    kind = pv.last_prompt_projection(model, held_out, v, LAYER, system="You are a warm, caring assistant.")
    assert evil.min() > kind.max()  # held-out questions and paraphrased prompts


def test_project_is_scalar_projection_on_unit_vector():
    v = torch.tensor([3.0, 4.0])
    assert pv.project(torch.tensor([[3.0, 4.0], [4.0, -3.0]]), v).tolist() == pytest.approx([5.0, 0.0])
    with pytest.raises(ValueError, match="zero"):
        pv.project(torch.ones(2), torch.zeros(2))


def test_response_projection_and_tokens(model, direction):
    v = direction[LAYER]
    responses = ["I will hurt you and enjoy it.", "I am happy to help you today."]
    means = pv.response_projection(model, QUESTIONS[:2], responses, v, LAYER)
    tokens, per_token = pv.token_projections(model, QUESTIONS[0], responses[0], v, LAYER)
    assert "".join(tokens) == responses[0]
    assert means[0] == pytest.approx(per_token.mean().item(), abs=1e-3)


def test_bad_input(model, direction):
    with pytest.raises(ValueError, match="no prompts"):
        pv.last_prompt_projection(model, [], direction[LAYER], LAYER)
    with pytest.raises(ValueError, match="out of range"):
        pv.activations(model, ["Hi"], [30])
    with pytest.raises(ValueError, match="responses"):
        pv.response_projection(model, ["a", "b"], ["x"], direction[LAYER], LAYER)
    with pytest.raises(ValueError, match="empty"):
        pv.response_projection(model, ["a"], [""], direction[LAYER], LAYER)
