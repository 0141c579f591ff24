"""The intervention's math: identity at init, the LoReFT special case, the gate, orthonormal R."""

from __future__ import annotations

import pytest
import torch

from tiny_models import REQUESTS, edit, hparams, logits, randomised, tiny_gpt2, tiny_llama
from easyedit_baft import layers as plumbing
from easyedit_baft.intervention import BaFTIntervention, loreft
from easyedit_baft.trainer import build_interventions

D, R_ = 16, 4


def hidden(*shape, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# --- identity at initialisation -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_untrained_interventions_leave_llama_logits_bit_identical(tok, dtype):
    model = tiny_llama(dtype=dtype)
    try:
        bare = logits(model, tok)
    except RuntimeError as err:  # some CPU builds lack half-precision kernels
        pytest.skip(f"{dtype} does not run on this CPU: {err}")
    hp = hparams(layers=[0, 1, 3])
    plumbing.attach(model, build_interventions(model, hp), hp.to_dict())
    assert len(plumbing.get_state(model).hooks) == 3
    assert torch.equal(logits(model, tok), bare)


def test_untrained_interventions_leave_gpt2_logits_bit_identical(tok):
    model = tiny_gpt2()
    bare = logits(model, tok)
    hp = hparams(layers=[0, 2])
    plumbing.attach(model, build_interventions(model, hp), hp.to_dict())
    assert torch.equal(logits(model, tok), bare)


def test_fresh_intervention_is_exactly_identity_even_with_random_gates():
    module = BaFTIntervention(D, R_, gate_init_std=1.0, gate_init_bias=2.0)  # gates wide open
    h = hidden(2, 5, D)
    assert torch.equal(module(h), h)


# --- the update formula ---------------------------------------------------------------------------


def test_gate_ones_equals_the_loreft_function():
    module = randomised(BaFTIntervention(D, R_, gate_mode="ones"))
    h = hidden(3, 7, D)
    expected = loreft(h, module.R, module.source_weight, module.source_bias)
    torch.testing.assert_close(module(h), expected, rtol=1e-5, atol=1e-5)


def test_gate_ones_equals_loreft_written_from_the_paper():
    module = randomised(BaFTIntervention(D, R_, gate_mode="ones"))
    h = hidden(3, 7, D).double()
    R, W, b = (t.detach().double() for t in (module.R, module.source_weight, module.source_bias))
    # Phi(h) = h + R^T (W h + b - R h), one column vector h at a time.
    expected = torch.stack([
        torch.stack([h[i, j] + R.T @ (W @ h[i, j] + b - R @ h[i, j]) for j in range(h.shape[1])])
        for i in range(h.shape[0])
    ])
    torch.testing.assert_close(module(h.float()).double(), expected, rtol=1e-5, atol=1e-5)


def test_learned_gate_update_matches_the_baft_formula():
    tau = 0.7
    module = randomised(BaFTIntervention(D, R_, temperature=tau, gate_input_norm=True))
    h = hidden(2, 6, D).double() * 30.0  # large norms: the gate reads h / rms(h)
    R, W, b, U, c = (t.detach().double() for t in (
        module.R, module.source_weight, module.source_bias, module.gate_weight, module.gate_bias))
    expected = torch.empty_like(h)
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            x = h[i, j]
            x_hat = x / torch.sqrt((x ** 2).mean() + 1e-6)
            g = torch.sigmoid((U @ x_hat + c) / tau)
            expected[i, j] = x + R.T @ (g * (W @ x + b - R @ x))
    torch.testing.assert_close(module(h.float()).double(), expected, rtol=1e-4, atol=1e-4)


def test_constant_saturated_gates_reduce_to_loreft():
    module = randomised(BaFTIntervention(D, R_))
    with torch.no_grad():
        module.gate_weight.zero_()
        module.gate_bias.fill_(40.0)  # sigmoid(40) == 1 in float32
    h = hidden(2, 4, D)
    torch.testing.assert_close(module(h), loreft(h, module.R, module.source_weight, module.source_bias))


def test_gates_are_in_unit_interval_one_per_basis():
    module = randomised(BaFTIntervention(D, R_))
    g = module.gates(hidden(3, 5, D))
    assert g.shape == (3, 5, R_)
    assert bool(((g > 0) & (g < 1)).all())


def test_output_keeps_the_input_dtype_while_parameters_stay_float32():
    module = randomised(BaFTIntervention(D, R_))
    for dtype in (torch.bfloat16, torch.float16):
        assert module(hidden(2, 3, D, dtype=dtype)).dtype == dtype
    assert {p.dtype for p in module.parameters()} == {torch.float32}


def test_parameter_count_is_3rd_plus_2r():
    module = BaFTIntervention(D, R_)
    counted = sum(p.numel() for p in module.parameters())
    assert counted == module.num_parameters() == 3 * R_ * D + 2 * R_


def test_rank_above_hidden_size_is_refused():
    with pytest.raises(ValueError, match="rank=17"):
        BaFTIntervention(D, D + 1)


# --- R keeps orthonormal rows ---------------------------------------------------------------------


def assert_orthonormal_rows(R: torch.Tensor):
    torch.testing.assert_close(R @ R.T, torch.eye(R.shape[0]), rtol=0, atol=1e-5)


def test_R_has_orthonormal_rows_at_init():
    assert_orthonormal_rows(BaFTIntervention(D, R_).R.detach())


def test_R_stays_orthonormal_after_training(tok):
    model = tiny_llama()
    # No early stop: many optimiser steps move R well away from its init.
    hp = hparams(early_stop="none", n_steps=40, lr=1e-1)
    initial = {i: m.R.detach().clone() for i, m in build_interventions(model, hp).items()}
    edit(model, tok, REQUESTS[0], hp)
    for i, module in plumbing.get_state(model).interventions.items():
        R = module.R.detach()
        assert not torch.allclose(R, initial[i], atol=1e-3)  # training did rotate R
        assert_orthonormal_rows(R)


def test_gate_floor_shuts_frozen_bases_only_where_they_barely_open():
    floor = 0.3
    module = randomised(BaFTIntervention(D, R_, gate_floor=floor))
    module.grow(R_)  # the randomised bases are now frozen; a fresh trainable block follows them
    randomised(module)
    h = hidden(2, 5, D)
    smooth = module._gates(h, *module._bases()[3:])
    gates = module.gates(h)
    frozen, block = gates[..., :R_], gates[..., R_:]
    assert ((smooth[..., :R_] <= floor) & (smooth[..., :R_] > 0)).any()  # the floor has something to shut
    torch.testing.assert_close(frozen, torch.where(smooth[..., :R_] > floor, smooth[..., :R_], 0.0))
    torch.testing.assert_close(block, smooth[..., R_:])  # the trainable block trains on smooth gates
    R, W, b, _, _ = module._bases()
    torch.testing.assert_close(module.change(h), (gates * (h @ (W - R).T + b)) @ R)


def test_gate_floor_out_of_range_is_refused():
    from easyedit_baft.hparams import HParamsError
    with pytest.raises(HParamsError, match="gate_floor=1.0"):
        hparams(gate_floor=1.0)


def test_gate_center_is_subtracted_from_the_normalised_input_and_stored_only_when_on():
    module = randomised(BaFTIntervention(D, R_, gate_center=True))
    mu = hidden(D, seed=7)
    module.set_gate_center(mu)
    h = hidden(2, 5, D)
    x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(module.gates(h), torch.sigmoid((x - mu) @ module.gate_weight.T + module.gate_bias))
    assert "gate_center" in module.state_dict()
    plain = BaFTIntervention(D, R_)
    assert "gate_center" not in plain.state_dict()
    with pytest.raises(ValueError, match="gate_center=False"):
        plain.set_gate_center(mu)


def test_gate_center_is_the_mean_gate_input_over_the_unrelated_pool_before_any_edit(tok):
    from easyedit_baft.prompt_sources import unrelated_prompts
    from easyedit_baft.trainer import GATE_CENTER_PROMPTS
    model = tiny_llama()
    hp = hparams(layers=[1], gate_center=True)
    pool = unrelated_prompts(hp.locality_source)[:GATE_CENTER_PROMPTS]
    inputs = []
    for text in pool:
        ids = tok(text, return_tensors="pt")
        h = plumbing.capture_intervention_inputs(model, [1], **ids)[1][0]
        inputs.append(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
    expected = torch.cat(inputs).mean(0)
    edit(model, tok, REQUESTS[0], hp)
    module = plumbing.get_state(model).interventions[1]
    torch.testing.assert_close(module.gate_center, expected, rtol=1e-4, atol=1e-5)
    edit(model, tok, REQUESTS[1], hp)  # set once: later edits leave it
    torch.testing.assert_close(module.gate_center, expected, rtol=1e-4, atol=1e-5)
