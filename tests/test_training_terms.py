"""The training loop's parts on a tiny model: the KL term and the 'loss' early-stop rule."""

from __future__ import annotations

import random

import pytest
import torch

from tiny_models import REQUESTS, edit, hparams, randomised, target_holds, tiny_llama
from easyedit_baft import layers as plumbing
from easyedit_baft.trainer import _Timer, build_batch, build_interventions, loss_terms


def _terms(model, tok, hp, perturb=False):
    state = plumbing.attach(model, build_interventions(model, hp), hp.to_dict())
    indices = sorted(state.interventions)
    for module in state.interventions.values():
        module.record_gates = True  # as train_edit sets it: the load-balance term reads the gates
    model.eval()
    batch = build_batch(model, tok, [REQUESTS[0]], hp, state, indices, random.Random(0))
    if perturb:  # after the batch: its reference is the model as this edit found it
        for module in state.interventions.values():
            randomised(module)
    with plumbing.reuse_layer_input(model, indices[0], batch.layer_input):
        terms, _, _ = loss_terms(model, batch, state.interventions, hp, state.edit_count, _Timer())
    plumbing.detach(model)
    return terms, state


def test_kl_term_is_zero_before_training_and_grows_with_the_change(tok):
    hp = hparams(kl_weight=1.0)
    still, _ = _terms(tiny_llama(), tok, hp)
    assert still["kl"].item() == pytest.approx(0.0, abs=1e-6)  # identity at init: same distributions
    moved, state = _terms(tiny_llama(), tok, hp, perturb=True)
    assert moved["kl"].item() > 1e-3
    grads = torch.autograd.grad(moved["kl"], [m.gate_weight for m in state.interventions.values()])
    assert all(g.abs().sum() > 0 for g in grads)  # it trains the gates


def test_without_kl_weight_there_is_no_kl_term(tok):
    terms, _ = _terms(tiny_llama(), tok, hparams(kl_weight=0.0), perturb=True)
    assert "kl" not in terms and {"edit", "locality"} <= set(terms)


def test_early_stop_on_loss_stops_at_the_first_step_below_the_threshold(tok):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(early_stop="loss", early_stop_loss=1e6, early_stop_locality=None))
    report = plumbing.get_state(model).last_report
    assert report.steps == 1 and not target_holds(model, tok, REQUESTS[0]["prompt"], REQUESTS[0]["target_new"])

    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(early_stop="loss", early_stop_loss=0.05, early_stop_locality=None))
    report = plumbing.get_state(model).last_report
    assert 1 < report.steps < 100 and report.edit_loss < 0.05
    assert target_holds(model, tok, REQUESTS[0]["prompt"], REQUESTS[0]["target_new"])
