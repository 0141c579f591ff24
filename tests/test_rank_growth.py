"""grow_rank: later edits train fresh bases while the bases of earlier edits stay frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tiny_models import REQUESTS, edit, hparams, logits, randomised, state_digest, target_holds, tiny_llama
from easyedit_baft import layers as plumbing
from easyedit_baft.artifacts import load_edits, save_edits
from easyedit_baft.intervention import FROZEN_BUFFERS, ORTHOGONAL_SHARE, BaFTIntervention

D, RANK = 16, 4


def test_grow_keeps_the_update_and_adds_a_trainable_orthonormal_block():
    module = randomised(BaFTIntervention(D, RANK))
    h = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(1))
    before, old_R = module(h), module.R.detach().clone()
    module.grow(3, torch.Generator().manual_seed(2))
    assert (module.rank, module.n_frozen, module.block_rank) == (RANK + 3, RANK, 3)
    torch.testing.assert_close(module(h), before, rtol=0, atol=1e-5)  # the new block starts at zero
    R = module.R.detach()
    torch.testing.assert_close(R[:RANK], old_R)
    torch.testing.assert_close(R @ R.T, torch.eye(RANK + 3), rtol=0, atol=1e-5)  # orthogonal while there is room
    assert module.gates(h).shape == (3, 5, RANK + 3)
    assert module.num_parameters() == sum(p.numel() for p in module.parameters())


def test_after_grow_only_the_new_block_receives_gradients():
    module = randomised(BaFTIntervention(D, RANK))
    module.grow(2, torch.Generator().manual_seed(2))
    randomised(module, seed=3)  # the new block away from zero, so its gradient is not trivially small
    frozen_before = {name: getattr(module, name).clone() for name in FROZEN_BUFFERS}
    params = list(module.parameters())
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(3):
        loss = module(torch.randn(4, D)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.retract()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    for name, tensor in frozen_before.items():
        assert torch.equal(getattr(module, name), tensor), name
    R = module.R.detach()
    torch.testing.assert_close(R @ R.T, torch.eye(RANK + 2), rtol=0, atol=1e-5)  # the retraction keeps it so


def test_growth_has_no_cap_at_the_hidden_size():
    module = BaFTIntervention(D, RANK)
    for seed in range(D):  # 4 + 16 * 4 bases in a 16-dimensional space
        module.grow(RANK, torch.Generator().manual_seed(seed + 1))  # seed 0 drew the first block
        R = module.R.detach()
        if module.rank == ORTHOGONAL_SHARE * D:  # every basis so far is orthogonal to the others
            torch.testing.assert_close(R @ R.T, torch.eye(module.rank), rtol=0, atol=1e-4)
        if module.rank == ORTHOGONAL_SHARE * D + RANK:  # the first block past the share is free
            assert (R[module.n_frozen:] @ R[:module.n_frozen].T).abs().max() > 1e-2
    assert module.rank == RANK * (D + 1) > D
    assert module.num_parameters() == 3 * RANK * D + 2 * RANK  # what one edit trains stays the same


def grown_hparams():
    # Two layers, so replayed edits train through the model: early stop waits until they hold again.
    return hparams(grow_rank=2, early_stop_waits_for_replay=True)


@pytest.mark.parametrize("gate_floor", [0.0, 0.1])
def test_sequential_edits_with_growth_hold_and_leave_earlier_bases_untouched(tok, gate_floor):
    model = tiny_llama()
    hp = dataclasses.replace(grown_hparams(), gate_floor=gate_floor)
    edit(model, tok, REQUESTS[0], hp)
    first = {i: (m.R.detach().clone(), m.source_weight.detach().clone())
             for i, m in plumbing.get_state(model).interventions.items()}
    for request in REQUESTS[1:4]:
        edit(model, tok, request, hp)
    state = plumbing.get_state(model)
    for i, module in state.interventions.items():
        assert module.rank == hp.rank + 3 * hp.grow_rank
        assert torch.equal(module.frozen_rotation[: hp.rank], first[i][0])
        assert torch.equal(module.frozen_source_weight[: hp.rank], first[i][1])
    assert all(target_holds(model, tok, r["prompt"], r["target_new"]) for r in REQUESTS[:4])


def test_undoing_a_growing_edit_restores_the_smaller_interventions_exactly(tok):
    model = tiny_llama()
    hp = grown_hparams()
    edit(model, tok, REQUESTS[0], hp)
    before = logits(model, tok)
    ranks = {i: m.rank for i, m in plumbing.get_state(model).interventions.items()}
    _, undo = edit(model, tok, REQUESTS[1], hp, return_orig_weights=True)
    assert not torch.equal(logits(model, tok), before)
    undo()
    assert {i: m.rank for i, m in plumbing.get_state(model).interventions.items()} == ranks
    assert torch.equal(logits(model, tok), before)


@pytest.mark.parametrize("gate_center", [False, True])
def test_grown_edits_survive_save_and_load_bit_identically(tok, tmp_path, gate_center):
    model = tiny_llama()
    hp = dataclasses.replace(grown_hparams(), gate_center=gate_center)
    for request in REQUESTS[:3]:
        edit(model, tok, request, hp)
    fresh = tiny_llama()
    load_edits(fresh, save_edits(model, tmp_path / "edits"))
    assert torch.equal(logits(fresh, tok), logits(model, tok))
    edit(model, tok, REQUESTS[3], hp)
    edit(fresh, tok, REQUESTS[3], hp)  # editing continues after loading, exactly as it would have
    assert torch.equal(logits(fresh, tok), logits(model, tok))


def test_edits_keep_growing_and_holding_past_the_hidden_size(tok):
    model = tiny_llama()  # hidden size 64
    hp = hparams(layers=[2], rank=4, grow_rank=30)
    for request in REQUESTS[:4]:
        edit(model, tok, request, hp)
    module = plumbing.get_state(model).interventions[2]
    assert (module.rank, module.block_rank) == (94, 30)
    assert all(target_holds(model, tok, r["prompt"], r["target_new"]) for r in REQUESTS[:4])


def test_load_balancing_changes_nothing_on_a_first_edit_or_on_growing_edits(tok):
    """Its incremental term weighs the gates by past usage: zero for a first edit's bases and for a
    grown block's fresh ones. With one intervened layer (as shipped) the frozen gates see inputs no
    training changes, so BaFT and BaFT without load balancing train identically there."""
    results = []
    for lambda_lb in (0.1, 0.0):
        model = tiny_llama()
        hp = hparams(layers=[2], grow_rank=2, lambda_lb=lambda_lb)
        outputs = []
        for request in REQUESTS[:3]:
            edit(model, tok, request, hp)
            outputs.append(logits(model, tok))
        results.append(outputs)
    assert not torch.equal(results[0][0], logits(tiny_llama(), tok))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_load_balancing_does_steer_sequential_edits_that_share_bases(tok):
    results = []
    for lambda_lb in (0.1, 0.0):
        model = tiny_llama()
        for request in REQUESTS[:2]:
            edit(model, tok, request, hparams(layers=[2], lambda_lb=lambda_lb))
        results.append(logits(model, tok))
    assert not torch.equal(*results)


def test_growing_saving_and_loading_leave_the_global_random_state_alone(tok, tmp_path):
    model, fresh = tiny_llama(), tiny_llama()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    for request in REQUESTS[:2]:
        edit(model, tok, request, grown_hparams())
    load_edits(fresh, save_edits(model, tmp_path / "edits"))
    assert torch.equal(torch.get_rng_state(), before)


def test_replay_at_layer_keeps_every_edit_of_a_sequence_as_cheap_as_the_first(tok):
    model = tiny_llama()
    hp = hparams(layers=[2], grow_rank=2, replay_at_layer=True, n_locality_prompts=4, n_subject_swaps=0)
    reports = []
    for request in REQUESTS[:4]:
        edit(model, tok, request, hp)
        reports.append(plumbing.get_state(model).last_report)
    assert [r.rows for r in reports] == [reports[0].rows] * 4  # replayed edits do not run through the model
    assert [r.held_rows for r in reports] == [4, 5, 6, 7]  # they are held at the layer instead
    shared = hparams(layers=[2], grow_rank=2, n_locality_prompts=4)
    model = tiny_llama()
    for request in REQUESTS[:3]:
        edit(model, tok, request, shared)
    assert plumbing.get_state(model).last_report.rows > reports[0].rows  # trained again, as rows of the batch


def _cached_states(model):
    from easyedit_baft.trainer import STATE_CACHE_ATTR
    return model.__dict__[STATE_CACHE_ATTR].states


def test_unrelated_states_are_reused_until_a_weight_of_the_model_changes(tok):
    model = tiny_llama()
    hp = hparams(layers=[2], n_locality_prompts=4)
    _, undo = edit(model, tok, REQUESTS[0], hp, return_orig_weights=True)
    undo()
    cached = dict(_cached_states(model))
    assert cached
    edit(model, tok, REQUESTS[0], hp)
    assert all(_cached_states(model)[k] is v for k, v in cached.items())
    plumbing.detach(model)
    with torch.no_grad():  # as a weight editor would: in place, and through .data (no version bump)
        plumbing.decoder_layers(model)[0].mlp.down_proj.weight.data.mul_(2.0)
    edit(model, tok, REQUESTS[0], hp)
    key = next(iter(cached))
    assert not torch.equal(_cached_states(model)[key], cached[key])


def test_the_state_cache_stays_within_its_bound_and_never_drops_a_row_it_is_using(tok, monkeypatch):
    from easyedit_baft import trainer
    model = tiny_llama()
    hp = hparams(layers=[2], grow_rank=2, replay_at_layer=True, n_locality_prompts=6)
    edit(model, tok, REQUESTS[0], hp)
    one_row = next(iter(_cached_states(model).values()))
    monkeypatch.setattr(trainer, "STATE_CACHE_BYTES", 3 * one_row.numel() * one_row.element_size())
    for request in REQUESTS[1:4]:
        edit(model, tok, request, hp)  # more cacheable rows per edit than the cache holds
    assert len(_cached_states(model)) <= 3


def test_a_deep_copy_of_an_edited_model_does_not_carry_the_state_cache(tok):
    import copy
    from easyedit_baft.trainer import STATE_CACHE_ATTR
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(layers=[2], n_locality_prompts=4))
    assert model.__dict__[STATE_CACHE_ATTR] is not None
    assert copy.deepcopy(model).__dict__.get(STATE_CACHE_ATTR) is None


def test_rank_per_request_sizes_a_batch_block_by_its_requests(tok, tmp_path):
    hp = hparams(layers=[2], rank=3, grow_rank=2, rank_per_request=True)
    model = tiny_llama()
    edit(model, tok, REQUESTS[:3], hp)
    module = plumbing.get_state(model).interventions[2]
    assert (module.n_frozen, module.block_rank) == (0, 9)  # 3 requests x rank 3
    ungrown = tiny_llama()
    load_edits(ungrown, save_edits(model, tmp_path / "batch"))
    assert torch.equal(logits(ungrown, tok), logits(model, tok))
    assert all(target_holds(model, tok, r["prompt"], r["target_new"]) for r in REQUESTS[:3])
    shared = tiny_llama()
    edit(shared, tok, REQUESTS[:3], dataclasses.replace(hp, rank_per_request=False))
    assert not all(target_holds(shared, tok, r["prompt"], r["target_new"]) for r in REQUESTS[:3])  # 3 bases for 3
    edit(model, tok, REQUESTS[3:5], hp)
    assert (module.n_frozen, module.block_rank) == (9, 4)  # then 2 requests x grow_rank 2
    fresh = tiny_llama()
    load_edits(fresh, save_edits(model, tmp_path / "edits"))  # the batch's block shape comes back
    assert torch.equal(logits(fresh, tok), logits(model, tok))
    single = tiny_llama()
    edit(single, tok, REQUESTS[0], hp)  # one request: the rank as given
    assert plumbing.get_state(single).interventions[2].block_rank == 3


def test_rank_per_request_with_more_bases_than_the_hidden_size_fails_before_any_change(tok):
    model = tiny_llama()  # hidden size 64
    before = logits(model, tok)
    with pytest.raises(ValueError, match=r"3 requests x rank=30 = 90 bases.*at most 2 requests per call, lower rank"):
        edit(model, tok, REQUESTS[:3], hparams(layers=[2], rank=30, rank_per_request=True))
    assert plumbing.get_state(model) is None and torch.equal(logits(model, tok), before)
    hp = hparams(layers=[2], rank=4, grow_rank=30, rank_per_request=True)
    edit(model, tok, REQUESTS[0], hp)
    digest = state_digest(model)
    with pytest.raises(ValueError, match=r"3 requests x grow_rank=30 = 90 bases"):  # a later call, growing
        edit(model, tok, REQUESTS[1:4], hp)
    assert state_digest(model) == digest

