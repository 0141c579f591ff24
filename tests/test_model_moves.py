"""An edited model moved with model.to(dtype or device) keeps computing with its edits."""

from __future__ import annotations

import copy

import pytest
import torch

from easyedit_baft import layers as plumbing

from tiny_models import REQUESTS, edit, logits, target_holds, tiny_llama


@pytest.fixture(scope="module")
def edited(tok):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0])
    assert target_holds(model, tok, REQUESTS[0]["prompt"], REQUESTS[0]["target_new"])
    return model


def edit_effect(model, tok) -> torch.Tensor:
    """What the edits add to the logits of the probe text, in float32."""
    with plumbing.interventions_disabled(model):
        unedited = logits(model, tok).float()
    return logits(model, tok).float() - unedited


def _first_parameter(model, layer: int) -> torch.Tensor:
    return next(plumbing.get_state(model).interventions[layer].parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_moving_to_half_precision_keeps_the_edit(edited, tok, dtype):
    model = copy.deepcopy(edited).to(dtype)
    assert logits(model, tok).dtype == dtype
    expected = edit_effect(edited, tok)
    # The edit moves logits by up to ~13 here; rounding to half precision moves that by a few percent.
    assert (edit_effect(model, tok) - expected).abs().max() < 0.05 * expected.abs().max()
    request = REQUESTS[0]
    assert target_holds(model, tok, request["prompt"], request["target_new"])
    assert _first_parameter(model, 1).dtype == torch.float32  # interventions keep float32


def test_a_model_moved_to_bfloat16_takes_further_edits(edited, tok):
    model = copy.deepcopy(edited).to(torch.bfloat16)
    edit(model, tok, REQUESTS[1])
    for request in REQUESTS[:2]:
        assert target_holds(model, tok, request["prompt"], request["target_new"])


def test_moving_to_the_same_device_changes_nothing(edited, tok):
    before = logits(edited, tok)
    model = copy.deepcopy(edited)
    model.to("cpu")
    assert torch.equal(logits(model, tok), before)


def test_the_hook_moves_its_intervention_to_the_hidden_states_device(edited):
    # CPU has one real device; the meta device stands in for a second one.
    state = copy.deepcopy(plumbing.get_state(edited))
    hook = plumbing._InterventionHook(state, 1)
    hidden = torch.zeros(1, 3, 64, device="meta")
    output = hook(None, (), (hidden, None))
    assert output[0].device.type == "meta" and output[0].shape == hidden.shape
    assert all(t.device.type == "meta" for t in state.interventions[1].state_dict().values())
    assert _first_parameter(edited, 1).device.type == "cpu"  # the original model's edit stays put


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_moving_to_cuda_keeps_the_edit(edited, tok, dtype):
    model = copy.deepcopy(edited).to("cuda", dtype)
    inputs = tok(REQUESTS[0]["prompt"], return_tensors="pt").to("cuda")
    with torch.no_grad():
        moved = model(**inputs).logits.float().cpu()
        with plumbing.interventions_disabled(model):
            unedited = model(**inputs).logits.float().cpu()
    assert _first_parameter(model, 1).device.type == "cuda"
    with torch.no_grad():
        cpu_inputs = tok(REQUESTS[0]["prompt"], return_tensors="pt")
        expected = edited(**cpu_inputs).logits
        with plumbing.interventions_disabled(edited):
            expected = expected - edited(**cpu_inputs).logits
    assert ((moved - unedited) - expected).abs().max() < 0.05 * expected.abs().max()
