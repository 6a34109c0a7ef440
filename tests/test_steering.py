"""Steering: the same edit on both forward paths, the paper's position semantics, clean removal."""

import pytest
import torch

import pvlens as pv
from tests.conftest import QUESTIONS, no_hooks_left

LAYER = 12


def _ids(model, q=QUESTIONS[1]):
    return torch.tensor([pv.chat_ids(model.hf_tokenizer, q)])


def test_tl_and_hf_paths_steer_identically(model, direction):
    ids = _ids(model)
    with torch.no_grad(), pv.steer(model, direction[LAYER], LAYER, alpha=4.0, positions="all"):
        tl = model(ids)
        hf = model.hf_model(ids).logits
    with torch.no_grad():
        plain = model(ids)
    assert (tl - hf).abs().max() < 1e-3
    assert (tl - plain).abs().max() > 1.0  # and it does something
    assert no_hooks_left(model)


def test_adds_exactly_alpha_v_at_the_layer(model, direction):
    ids = _ids(model)
    v = direction[LAYER]
    with torch.no_grad():
        _, before = model.run_with_cache(ids, names_filter=f"blocks.{LAYER}.hook_resid_post")
        with pv.steer(model, v, LAYER, alpha=2.5, positions="all"):
            _, after = model.run_with_cache(ids, names_filter=f"blocks.{LAYER}.hook_resid_post")
    delta = after[f"blocks.{LAYER}.hook_resid_post"] - before[f"blocks.{LAYER}.hook_resid_post"]
    assert torch.allclose(delta, (2.5 * v).expand_as(delta), atol=1e-4)


def test_position_modes(model, direction):
    ids = _ids(model)
    name = f"blocks.{LAYER}.hook_resid_post"
    with torch.no_grad():
        _, base = model.run_with_cache(ids, names_filter=name)
        deltas = {}
        for mode in ("all", "prompt", "response"):
            with pv.steer(model, direction[LAYER], LAYER, alpha=1.0, positions=mode):
                _, c = model.run_with_cache(ids, names_filter=name)
            deltas[mode] = (c[name] - base[name]).norm(dim=-1)[0]
    assert (deltas["all"] > 0).all() and (deltas["prompt"] > 0).all()  # prefill: every position
    assert deltas["response"][-1] > 0 and (deltas["response"][:-1] == 0).all()  # last position only
    # in decode steps (one token per pass), "prompt" adds nothing and "response" adds every time
    seen = {}
    for mode in ("prompt", "response"):
        calls = []
        with pv.steer(model, direction[LAYER], LAYER, alpha=1.0, positions=mode), \
                pv.on_resid_post(model, LAYER, lambda h: calls.append(h.shape[1])):
            pv.generate(model, ["Hi"], temperature=0, max_new_tokens=4)
        seen[mode] = calls
    assert seen["prompt"][0] > 1 and all(n == 1 for n in seen["prompt"][1:])


def test_response_mode_changes_generation_and_alpha_zero_does_not(model, direction):
    plain = pv.generate(model, QUESTIONS[:2], temperature=0, max_new_tokens=16)
    with pv.steer(model, direction[LAYER], LAYER, alpha=0.0):
        zero = pv.generate(model, QUESTIONS[:2], temperature=0, max_new_tokens=16)
    with pv.steer(model, direction[LAYER], LAYER, alpha=0.6, units="resid"):
        steered = pv.generate(model, QUESTIONS[:2], temperature=0, max_new_tokens=16)
    assert [g.response for g in zero] == [g.response for g in plain]
    assert [g.response for g in steered] != [g.response for g in plain]


def test_resid_units_scale_by_layer_norm(model, direction):
    norms = pv.residual_norms(model)
    assert norms.shape == (model.cfg.n_layers,) and (norms > 0).all()
    assert norms[-1] > norms[0]  # the residual stream grows with depth
    ids = _ids(model)
    name = f"blocks.{LAYER}.hook_resid_post"
    with torch.no_grad():
        _, base = model.run_with_cache(ids, names_filter=name)
        with pv.steer(model, direction[LAYER], LAYER, alpha=0.5, units="resid", positions="all"):
            _, c = model.run_with_cache(ids, names_filter=name)
    added = (c[name] - base[name])[0, 0].norm()
    assert added == pytest.approx(0.5 * norms[LAYER].item(), rel=1e-4)


def test_multi_layer_and_incremental(model, direction):
    inc = pv.incremental(direction)
    assert torch.allclose(inc.cumsum(0), direction, atol=1e-4)
    ids = _ids(model)
    with torch.no_grad():
        with pv.steer(model, direction, [3, 7, 20], alpha=1.0, positions="all"):
            a = model(ids)
        with pv.steer(model, direction[3], 3, alpha=1.0, positions="all"), \
                pv.steer(model, direction[7], 7, alpha=1.0, positions="all"), \
                pv.steer(model, direction[20], 20, alpha=1.0, positions="all"):
            b = model(ids)
        with pv.steer(model, inc, "all", alpha=0.5):
            model(ids)
    assert torch.allclose(a, b, atol=1e-4)
    assert no_hooks_left(model)


def test_composes_with_user_hooks_and_run_with_hooks(model, direction):
    ids = _ids(model)
    name = f"blocks.{LAYER}.hook_resid_post"
    seen = []
    with torch.no_grad(), pv.steer(model, direction[LAYER], LAYER, alpha=1.0, positions="all"):
        model.run_with_hooks(ids, fwd_hooks=[(name, lambda t, hook: seen.append(t.clone()))])
        again = model(ids)  # run_with_hooks' reset_hooks() must not remove the steering hook
    with torch.no_grad():
        plain = model(ids)
        _, base = model.run_with_cache(ids, names_filter=name)
    assert torch.allclose(seen[0] - base[name], direction[LAYER].expand_as(base[name]), atol=1e-4)
    assert (again - plain).abs().max() > 1e-2


def test_hooks_removed_on_exception(model, direction):
    with pytest.raises(RuntimeError, match="boom"):
        with pv.steer(model, direction[LAYER], LAYER, alpha=1.0):
            raise RuntimeError("boom")
    assert no_hooks_left(model)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layers=30), ValueError, "out of range"),
    (dict(layers=-1), ValueError, "out of range"),
    (dict(vectors=torch.ones(10)), ValueError, "shape"),
    (dict(vectors=torch.full((576,), float("nan"))), ValueError, "NaN"),
    (dict(alpha=float("inf")), ValueError, "finite"),
    (dict(alpha=float("nan")), ValueError, "finite"),
    (dict(positions="middle"), ValueError, "positions"),
    (dict(alpha=True), ValueError, "finite"),
    (dict(units="percent"), ValueError, "units"),
    (dict(vectors=torch.ones(29, 576), layers="all"), ValueError, "per-layer"),
])
def test_bad_input_is_refused_and_installs_nothing(model, kwargs, error, match):
    args = dict(vectors=torch.ones(model.cfg.d_model), layers=LAYER, alpha=1.0) | kwargs
    with pytest.raises(error, match=match):
        with pv.steer(model, args.pop("vectors"), args.pop("layers"), **args):
            pass
    assert no_hooks_left(model)
