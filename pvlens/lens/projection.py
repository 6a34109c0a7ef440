"""Reading the residual stream and projecting it on a persona direction.

The projection of an activation ``h`` on a persona vector ``v`` is the scalar ``h · v/|v|``
(the reference code's ``a_proj_b``). The paper monitors the *last prompt token*: the position
just before the assistant's first token, read before any answer exists. For datasets it uses the
mean over response tokens. Both, and the per-token view, are here.

Activations are read through the Hugging Face twin with a hook at the deepest layer asked for,
and the forward pass stops there: reading layer 10 of 30 costs a third of a forward pass. The
values equal TransformerLens' ``blocks[L].hook_resid_post`` (the tests check it). Sequences are
batched by length and right-padded, so padding never shifts positions or leaks into real tokens.
"""

from __future__ import annotations

import json
from typing import Literal, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from pvlens.core.chat import Conversation, chat_ids, prompt_and_response
from pvlens.core.config import cache_dir
from pvlens.lens.checks import check_layer, check_vector, unit
from pvlens.models.loading import ChatModel


class StopForward(Exception):
    """Raised by the deepest hook to end a forward pass early."""


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), so padding wastes little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def right_padded(sequences: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """Token id sequences as one right-padded ``(ids, attention_mask)`` pair, both ``[batch, width]``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.no_grad()
def block_outputs(hf_model, ids: Tensor, mask: Tensor,
                  layers: Sequence[int]) -> dict[int, Float[Tensor, "batch seq d"]]:
    """Outputs of decoder blocks ``layers`` (0-indexed) of a Hugging Face causal LM.

    The forward pass stops after the deepest block asked for.
    """
    deepest, captured = max(layers), {}

    def grab(layer):
        def hook(module, inputs, output):
            captured[layer] = (output[0] if isinstance(output, tuple) else output).detach()
            if layer == deepest:
                raise StopForward

        return hook

    handles = [hf_model.model.layers[layer].register_forward_hook(grab(layer)) for layer in layers]
    try:
        hf_model.model(input_ids=ids, attention_mask=mask, use_cache=False)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


@torch.no_grad()
def resid_post(model: ChatModel, sequences: Sequence[Sequence[int]], layers: Sequence[int], batch_size: int = 16,
               progress: bool = False) -> dict[int, list[Float[Tensor, "seq d_model"]]]:
    """``blocks[L].hook_resid_post`` for each token id sequence, per layer, on the CPU in float32."""
    if len(sequences) == 0:
        raise ValueError("no sequences given")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("empty token sequence")
    layers = sorted({check_layer(model, layer) for layer in layers})
    device = model.cfg.device
    out: dict[int, list] = {layer: [None] * len(sequences) for layer in layers}
    for batch in tqdm(length_batches([len(s) for s in sequences], batch_size), disable=not progress,
                      desc="activations"):
        ids, mask = right_padded([sequences[i] for i in batch])
        captured = block_outputs(model.hf_model, ids.to(device), mask.to(device), layers)
        for layer in layers:
            acts = captured[layer].float().cpu()
            for row, i in enumerate(batch):
                out[layer][i] = acts[row, : len(sequences[i])].clone()
    return out


def project(acts: Float[Tensor, "... d_model"], vector: Float[Tensor, " d_model"]) -> Float[Tensor, "..."]:
    """Scalar projection on the unit vector: ``acts · v/|v|``."""
    return acts.float() @ unit(vector.float().to(acts.device))


def activations(model: ChatModel, conversations: Sequence[Conversation], layers: Sequence[int], *,
                system: str | None = None, positions: Literal["last", "all"] = "last", batch_size: int = 16):
    """Residual stream of chat prompts (ending with the assistant header).

    Returns ``{layer: (n, d_model)}`` for ``positions="last"`` (the last prompt token), or
    ``{layer: [ (seq_i, d_model) ]}`` for ``positions="all"``.
    """
    if len(conversations) == 0:
        raise ValueError("no prompts given")
    tok = model.hf_tokenizer
    seqs = [chat_ids(tok, c, system) for c in conversations]
    acts = resid_post(model, seqs, layers, batch_size)
    if positions == "all":
        return acts
    if positions != "last":
        raise ValueError(f"positions must be 'last' or 'all', got {positions!r}")
    return {layer: torch.stack([a[-1] for a in per_seq]) for layer, per_seq in acts.items()}


def last_prompt_projection(model: ChatModel, conversations: Sequence[Conversation], vector: Float[Tensor, " d_model"],
                           layer: int, *, system: str | None = None, batch_size: int = 16) -> Float[Tensor, " n"]:
    """The paper's monitor: projection of the last prompt token at ``layer``, before any answer."""
    check_vector(model, vector)
    acts = activations(model, conversations, [layer], system=system, batch_size=batch_size)[layer]
    return project(acts, vector)


def _response_acts(model: ChatModel, conversations, responses, layer, system, batch_size):
    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} prompts but {len(responses)} responses")
    if len(conversations) == 0:
        raise ValueError("no prompts given")
    pairs = [prompt_and_response(model.hf_tokenizer, c, r, system) for c, r in zip(conversations, responses)]
    acts = resid_post(model, [p + r for p, r in pairs], [layer], batch_size)[layer]
    return [a[len(p):] for a, (p, _) in zip(acts, pairs)]


def response_projection(model: ChatModel, conversations: Sequence[Conversation], responses: Sequence[str],
                        vector: Float[Tensor, " d_model"], layer: int, *, system: str | None = None,
                        batch_size: int = 16) -> Float[Tensor, " n"]:
    """Mean projection over each response's tokens (the paper's dataset-level projection)."""
    check_vector(model, vector)
    per_response = _response_acts(model, conversations, responses, layer, system, batch_size)
    for i, a in enumerate(per_response):
        if len(a) == 0:
            raise ValueError(f"response {i} is empty")
    return torch.stack([project(a, vector).mean() for a in per_response])


def token_projections(model: ChatModel, conversation: Conversation, response: str, vector: Float[Tensor, " d_model"],
                      layer: int, *, system: str | None = None) -> tuple[list[str], Float[Tensor, " n_tokens"]]:
    """Per-token projections of one response, with the token strings (for a per-token view)."""
    check_vector(model, vector)
    (acts,) = _response_acts(model, [conversation], [response], layer, system, 1)
    _, ids = prompt_and_response(model.hf_tokenizer, conversation, response, system)
    return [model.hf_tokenizer.decode([i]) for i in ids], project(acts, vector)


NEUTRAL_PROMPTS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Can you explain what photosynthesis is?",
    "Give me three tips for a job interview.",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "How does a bicycle stay upright?",
    "What should I pack for a weekend hike?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "How can I improve my sleep?",
    "What is a prime number?",
    "Recommend a good way to learn a new language.",
    "How do vaccines work?",
    "What are some healthy breakfast ideas?",
    "Explain how a loan's interest works.",
]


def residual_norms(model: ChatModel) -> Float[Tensor, " n_layers"]:
    """Mean L2 norm of ``resid_post`` per layer on 16 neutral chat prompts (cached per weights).

    The first position is left out: chat models park a huge norm on the start token (an
    attention sink) that would dominate the mean.
    """
    cached = model.__dict__.get("_resid_norms")
    if cached is not None:
        return cached
    path = cache_dir("resid_norms") / f"{model.info.fingerprint}.json"
    if path.exists():
        norms = torch.tensor(json.loads(path.read_text())["norms"])
    else:
        acts = activations(model, NEUTRAL_PROMPTS, layers=list(range(model.cfg.n_layers)), positions="all")
        norms = torch.stack([torch.cat([a[1:].norm(dim=-1) for a in acts[layer]]).mean()
                             for layer in range(model.cfg.n_layers)]).float().cpu()
        path.write_text(json.dumps({"model": model.info.name, "norms": norms.tolist()}))
    model.__dict__["_resid_norms"] = norms
    return norms
