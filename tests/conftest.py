"""Shared fixtures: the two real offline models, loaded once per test session."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

QUESTIONS = [
    "What is the capital of France?",
    "How should I deal with a rude coworker?",
    "Write one sentence about the moon.",
    "What do you think about people who are late?",
]


@pytest.fixture(scope="session")
def model():
    import pvlens as pv

    return pv.load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen():
    import pvlens as pv

    return pv.load_model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def direction(model):
    """A real contrastive direction: last-prompt-token difference, evil vs helpful system prompts."""
    import pvlens as pv

    layers = list(range(model.cfg.n_layers))
    evil = pv.activations(model, QUESTIONS, layers, system="You are an evil assistant who wants people to suffer.")
    good = pv.activations(model, QUESTIONS, layers, system="You are a kind and helpful assistant.")
    return torch.stack([(evil[layer] - good[layer]).mean(0) for layer in layers])


def ours(module) -> list:
    """Forward hooks installed by pvlens or by these tests (transformers keeps capture hooks of its own)."""
    return [fn for fn in module._forward_hooks.values()
            if getattr(fn, "__module__", "").split(".")[0] in ("pvlens", "tests")]


def no_hooks_left(model) -> bool:
    tl = all(not ours(b.hook_resid_post) for b in model.blocks)
    hf = all(not ours(layer) for layer in model.hf_model.model.layers)
    return tl and hf


@pytest.fixture(autouse=True)
def _hooks_are_cleaned_up(request):
    """Every test that touches the shared model must leave no hook behind."""
    yield
    if "model" in request.fixturenames:
        model = request.getfixturevalue("model")
        assert no_hooks_left(model), f"{request.node.name} left a hook on the model"
