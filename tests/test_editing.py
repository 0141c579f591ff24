"""Editing end to end on tiny models: edits hold, restore is exact, edits accumulate, gates stay local."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from tiny_models import (
    HELD_OUT_PROMPTS,
    REQUESTS,
    Fingerprint,
    edit,
    forward_hook_count,
    hparams,
    logits,
    randomised,
    target_holds,
    TINY_DECODERS,
    tiny_decoder,
    tiny_gpt2,
    tiny_llama,
)
from easyedit_baft import layers as plumbing
from easyedit_baft import trainer
from easyedit_baft.baft_main import apply_baft_to_model
from easyedit_baft.trainer import STATE_CACHE_ATTR, _Screen, build_batch, build_interventions
from easyedit_baft.hparams.baft_hparams import LOCALITY_PENALTIES
from easyedit_baft.prompt_sources import (builtin_subject_names, relation_swapped_prompts, relation_templates,
                                         subject_swapped_prompts)


def holds(model, tok, request) -> bool:
    return target_holds(model, tok, request["prompt"], request["target_new"])


@pytest.fixture(scope="module")
def edited_once(tok):
    """A tiny Llama carrying one edit (REQUESTS[0]); tests that use it must leave it as it is."""
    model = tiny_llama()
    edit(model, tok, REQUESTS[0])
    return model


# --- one edit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", REQUESTS[:4], ids=lambda r: r["target_new"])
def test_one_edit_makes_every_target_token_the_argmax(tok, request_):
    model = tiny_llama()
    assert not holds(model, tok, request_)  # otherwise the test would prove nothing
    edit(model, tok, request_)
    assert holds(model, tok, request_)
    assert plumbing.get_state(model).last_report.holds


def test_editing_never_touches_model_parameters(tok):
    model = tiny_llama()
    before = Fingerprint(model, tok)
    edit(model, tok, REQUESTS[1])
    after = Fingerprint(model, tok)
    assert after.weights == before.weights
    assert after.grads == before.grads and after.requires_grad == before.requires_grad
    assert not torch.equal(after.logits, before.logits)  # the edit itself is in the hooks


def test_disabled_interventions_give_the_unedited_logits(edited_once, tok):
    bare = logits(tiny_llama(), tok)
    with plumbing.interventions_disabled(edited_once):
        assert torch.equal(logits(edited_once, tok), bare)
    assert not torch.equal(logits(edited_once, tok), bare)


def test_loreft_mode_with_gates_fixed_at_one_also_edits(tok):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(gate="ones"))
    assert holds(model, tok, REQUESTS[0])


# --- restore (EasyEdit's weights_copy) ------------------------------------------------------------


def test_restore_on_unedited_model_gives_bit_identical_logits_and_no_hooks(tok):
    model = tiny_llama()
    before = Fingerprint(model, tok)
    _, restore = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert holds(model, tok, REQUESTS[0])
    restore()
    before.assert_unchanged()
    assert plumbing.get_state(model) is None and forward_hook_count(model) == 0


def test_restore_on_already_edited_model_keeps_earlier_edit_bit_identical(tok):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0])
    before = Fingerprint(model, tok)
    _, restore = edit(model, tok, REQUESTS[1], return_orig_weights=True)
    assert holds(model, tok, REQUESTS[1])
    restore()
    before.assert_unchanged()
    assert holds(model, tok, REQUESTS[0]) and not holds(model, tok, REQUESTS[1])


def test_edit_restore_edit_again_repeats_the_first_edit_exactly(tok):
    # EasyEdit's non-sequential loop edits and restores the same model once per request.
    model = tiny_llama()
    _, restore = edit(model, tok, REQUESTS[2], return_orig_weights=True)
    first = logits(model, tok)
    restore()
    edit(model, tok, REQUESTS[2])
    assert torch.equal(logits(model, tok), first)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_model_edits_and_restores_exactly(tok, dtype):
    model = tiny_llama(dtype=dtype)
    before = Fingerprint(model, tok)
    _, restore = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert holds(model, tok, REQUESTS[0])
    assert {p.dtype for p in model.parameters()} == {dtype}
    restore()
    before.assert_unchanged()


def test_without_return_orig_weights_weights_copy_is_empty_dict(tok):
    model = tiny_llama()
    edited, weights_copy = edit(model, tok, REQUESTS[0], return_orig_weights=False)
    assert edited is model and weights_copy == {}


# --- many edits -----------------------------------------------------------------------------------


def test_five_sequential_edits_all_hold_including_the_first(tok):
    model = tiny_llama()
    for request in REQUESTS[:5]:
        edit(model, tok, request)
    assert holds(model, tok, REQUESTS[0])
    assert all(holds(model, tok, r) for r in REQUESTS[:5])
    state = plumbing.get_state(model)
    assert state.edit_count == 5 and len(state.hooks) == len(hparams().layers)


def test_batch_of_requests_trained_together_all_hold(tok):
    model = tiny_llama()
    assert not any(holds(model, tok, r) for r in REQUESTS)
    edit(model, tok, REQUESTS)
    assert all(holds(model, tok, r) for r in REQUESTS)
    assert plumbing.get_state(model).edit_count == len(REQUESTS)


def test_changed_structure_on_an_edited_model_is_refused_untouched(edited_once, tok):
    before = Fingerprint(edited_once, tok)
    for field, value in (("rank", 4), ("layers", [2]), ("gate", "ones")):
        with pytest.raises(ValueError, match=f"{field}="):
            edit(edited_once, tok, REQUESTS[1], hparams(**{field: value}))
        before.assert_unchanged()


# --- copy=True ------------------------------------------------------------------------------------


def test_copy_true_leaves_the_original_untouched(tok):
    model = tiny_llama()
    before = Fingerprint(model, tok)
    edited, _ = edit(model, tok, REQUESTS[0], copy=True)
    assert edited is not model and holds(edited, tok, REQUESTS[0])
    before.assert_unchanged()
    assert plumbing.get_state(model) is None and forward_hook_count(model) == 0


def test_copy_true_of_an_edited_model_trains_the_copy_own_interventions(edited_once, tok):
    # A deep copy must not keep hooks that point at the original's interventions.
    before = Fingerprint(edited_once, tok)
    copied, _ = edit(edited_once, tok, REQUESTS[1], copy=True)
    before.assert_unchanged()
    assert holds(copied, tok, REQUESTS[0]) and holds(copied, tok, REQUESTS[1])
    assert plumbing.get_state(copied) is not plumbing.get_state(edited_once)
    with plumbing.interventions_disabled(copied):  # switches only the copy's hooks
        assert not holds(copied, tok, REQUESTS[1])
        assert holds(edited_once, tok, REQUESTS[0])


# --- gates stay closed on unrelated prompts -------------------------------------------------------


def gate_stats(model, tok, prompt: str):
    """Per layer: the gates at the prompt's last token (r,), and every gate on held-out prompts (n, r)."""
    state = plumbing.get_state(model)
    indices = sorted(state.interventions)

    def inputs(text):
        return plumbing.capture_intervention_inputs(model, indices, **tok(text, return_tensors="pt"))

    edit_in, held_out = inputs(prompt), [inputs(p) for p in HELD_OUT_PROMPTS]
    with torch.no_grad():
        return {
            i: (state.interventions[i].gates(edit_in[i].float())[0, -1],
                torch.cat([state.interventions[i].gates(h[i].float())[0] for h in held_out]))
            for i in indices
        }


@pytest.mark.parametrize("penalty", LOCALITY_PENALTIES)
def test_gates_open_on_the_edit_prompt_and_stay_near_zero_on_unrelated_prompts(tok, penalty):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(locality_penalty=penalty))
    stats = gate_stats(model, tok, REQUESTS[0]["prompt"])
    for edit_gates, unrelated in stats.values():
        assert unrelated.mean() < 0.2  # gates start at sigmoid(-3) = 0.05; 0.5 would be undecided
    # The basis the edit opens most, where the target is predicted, versus the same basis elsewhere.
    layer = max(stats, key=lambda i: stats[i][0].max())
    edit_gates, unrelated = stats[layer]
    top = edit_gates.argmax()
    assert edit_gates[top] > 0.3
    assert edit_gates[top] > 4 * unrelated[:, top].mean()


@pytest.mark.parametrize("penalty", LOCALITY_PENALTIES)
def test_locality_loss_keeps_unrelated_gates_lower_than_training_without_it(tok, penalty):
    # Same number of steps either way (no early stop), so only lambda_loc differs.
    mean_gate = {}
    for lambda_loc in (0.0, 1.0):
        model = tiny_llama()
        hp = hparams(lambda_loc=lambda_loc, locality_penalty=penalty, early_stop="none", n_steps=30)
        edit(model, tok, REQUESTS[0], hp)
        stats = gate_stats(model, tok, REQUESTS[0]["prompt"])
        mean_gate[lambda_loc] = torch.stack([unrelated.mean() for _, unrelated in stats.values()]).mean()
    assert mean_gate[1.0] < 0.7 * mean_gate[0.0]


def test_early_stop_waits_for_locality_when_asked(tok):
    steps = {}
    for threshold in (None, 0.002):
        model = tiny_llama()
        edit(model, tok, REQUESTS[0], hparams(early_stop_locality=threshold))
        report = plumbing.get_state(model).last_report
        steps[threshold] = report.steps
        assert report.holds  # here every step cap finds a step that held
    if report.steps < 100:
        assert report.unrelated_change <= 0.002  # met by early stop
    else:  # capped: it ends at its most local step that held, beyond the budget
        assert report.unrelated_change > 0.002
    assert steps[0.002] > steps[None]


def _unrelated_peak_change(model, tok, module_index: int, prompts) -> float:
    """The locality penalty recomputed from scratch: mean over prompts of the peak relative change."""
    module = plumbing.get_state(model).interventions[module_index]
    peaks = []
    for text in prompts:
        ids = tok(text, return_tensors="pt")
        with plumbing.interventions_disabled(model):
            h = plumbing.capture_intervention_inputs(model, [module_index], **ids)[module_index][0].float()
        peaks.append((module.change(h).norm(dim=-1) / h.norm(dim=-1)).max().item())
    return sum(peaks) / len(peaks)


def test_a_step_capped_edit_ends_within_the_locality_budget(tok, tmp_path):
    # Each step moves unrelated prompts further; the budget is crossed half way to the cap.
    prompts = ["The weather today is", "My favourite colour is", "Trains leave from the station at"]
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(prompts))
    changes = {}
    for budget in (None, 0.005):
        model = tiny_llama()
        hp = hparams(layers=[1], lr=0.002, n_steps=8, early_stop="none", early_stop_locality=budget,
                     locality_source=str(pool), n_locality_prompts=len(prompts), lambda_loc=1e-6)
        edit(model, tok, REQUESTS[0], hp)
        changes[budget] = _unrelated_peak_change(model, tok, 1, prompts)
        report = plumbing.get_state(model).last_report
        assert report.steps == 8
    assert changes[None] > 0.005  # unconstrained, the edit leaves the budget
    assert 0 < changes[0.005] <= 0.005  # within it, and not the untrained block
    assert changes[0.005] == pytest.approx(report.unrelated_change, rel=1e-3)  # the kept step's parameters


def test_a_step_capped_edit_that_held_ends_holding_at_its_most_local_step(tok):
    # The budget is out of reach: every step that holds moves the unrelated prompts beyond it.
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(layers=[1], n_steps=30, early_stop_locality=1e-7))
    report = plumbing.get_state(model).last_report
    assert report.steps == 30 and report.holds and holds(model, tok, REQUESTS[0])
    assert report.unrelated_change > 1e-7


@pytest.mark.parametrize("cap_locality", [1.0, 1e-7])
def test_cap_locality_bounds_where_a_capped_edit_that_held_ends(tok, cap_locality):
    # As above, the budget is out of reach; cap_locality above the most local step that held keeps it,
    # one below sends the edit back to its best step within the budget, which does not hold.
    model = tiny_llama()
    edit(model, tok, REQUESTS[0], hparams(layers=[1], n_steps=30, early_stop_locality=1e-7, cap_locality=cap_locality))
    report = plumbing.get_state(model).last_report
    held_end = report.unrelated_change > 1e-7
    assert report.steps == 30 and report.holds == held_end == (cap_locality == 1.0)
    assert report.unrelated_change <= cap_locality
    assert holds(model, tok, REQUESTS[0]) == held_end


def test_subject_swaps_keep_the_same_question_about_others_unchanged(tok):
    """Swapped-subject prompts teach the gate the subject: on them, the edit moves the state less."""
    request = REQUESTS[0]
    swapped = subject_swapped_prompts(request["prompt"], request["subject"], 12, random.Random(0))
    change = {}
    for swaps in (0, len(builtin_subject_names())):
        model = tiny_llama()
        edit(model, tok, request, hparams(n_subject_swaps=swaps, early_stop="none", n_steps=30))
        assert holds(model, tok, request)
        state = plumbing.get_state(model)
        with torch.no_grad():
            moved = []
            for text in swapped:
                inputs = plumbing.capture_intervention_inputs(model, sorted(state.interventions),
                                                              **tok(text, return_tensors="pt"))
                for i, h in inputs.items():
                    h = h.float()
                    moved.append((state.interventions[i].change(h).norm(dim=-1) / h.norm(dim=-1)).max())
        change[swaps] = torch.stack(moved).mean()
    assert change[len(builtin_subject_names())] < 0.5 * change[0]


# --- architectures --------------------------------------------------------------------------------


def test_gpt2_edits_and_restores(tok):
    model = tiny_gpt2()
    before = Fingerprint(model, tok)
    _, restore = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert holds(model, tok, REQUESTS[0])
    restore()
    before.assert_unchanged()


@pytest.mark.parametrize("model_type", sorted(TINY_DECODERS))
def test_every_supported_decoder_family_edits_and_restores(tok, model_type):
    model = tiny_decoder(model_type)
    assert model.config.model_type == model_type
    before = Fingerprint(model, tok)
    _, restore = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert holds(model, tok, REQUESTS[0])
    restore()
    before.assert_unchanged()


def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()


def llama_named_foo():
    model = tiny_llama()
    model.config.model_type = "foo"
    return model


@pytest.mark.parametrize("build", [tiny_bert, llama_named_foo])
def test_unknown_architecture_is_refused_naming_supported_ones(tok, build):
    model = build()
    before = Fingerprint(model, tok)
    with pytest.raises(plumbing.UnsupportedModelError) as err:
        apply_baft_to_model(model, tok, [REQUESTS[0]], hparams())
    assert repr(model.config.model_type) in str(err.value)
    assert all(name in str(err.value) for name in ("llama", "gpt2", "qwen2", "mistral"))
    before.assert_unchanged()


# --- subject-swapped prompts ----------------------------------------------------------------------


def test_subject_swapped_prompts_replace_the_subject_with_other_names():
    swapped = subject_swapped_prompts("Who founded Nokia? Nokia was founded by", "Nokia", 5, random.Random(1))
    assert len(swapped) == 5 and len(set(swapped)) == 5
    names = builtin_subject_names()
    for text in swapped:
        assert "Nokia" not in text  # every occurrence replaced, and never by the subject itself
        assert any(text == f"Who founded {n}? {n} was founded by" for n in names)


SWAPS = [subject_swapped_prompts, relation_swapped_prompts]


@pytest.mark.parametrize("swaps", SWAPS)
@pytest.mark.parametrize("subject", [None, "", "Oslo", 7])
def test_no_swaps_when_the_subject_is_missing_or_not_in_the_prompt(swaps, subject):
    assert swaps("The capital of France is", subject, 4, random.Random(0)) == []


@pytest.mark.parametrize("swaps", SWAPS)
def test_zero_swaps_leave_the_random_stream_alone(swaps):
    rng, untouched = random.Random(3), random.Random(3)
    assert swaps("The capital of France is", "France", 0, rng) == []
    assert rng.random() == untouched.random()


# --- relation-swapped prompts ---------------------------------------------------------------------


def test_relation_swapped_prompts_ask_other_questions_about_the_same_subject():
    swapped = relation_swapped_prompts("What was Nokia's occupation?", "Nokia", 6, random.Random(0))
    templates = set(relation_templates())
    assert len(swapped) == 6 and len(set(swapped)) == 6
    assert all(text.replace("Nokia", "{}", 1) in templates for text in swapped)
    assert not any("occupation" in text for text in swapped)  # the edited question's own wording is skipped


def test_statement_templates_state_other_facts_about_the_same_subject():
    statements = set(relation_templates("statements"))
    swapped = relation_swapped_prompts("Who founded Nokia?", "Nokia", 80, random.Random(0), form="statements")
    assert not statements & set(relation_templates("questions"))
    assert len(set(swapped)) == len(statements) - 1 and "Nokia was founded in the year" not in swapped
    assert all(text.replace("Nokia", "{}", 1) in statements for text in swapped)


def test_the_configured_template_form_reaches_the_relation_swaps(tok, monkeypatch):
    forms = []
    monkeypatch.setattr(trainer, "relation_swapped_prompts",
                        lambda *args: forms.append(args[4]) or relation_swapped_prompts(*args))
    edit(tiny_llama(), tok, REQUESTS[0], hparams(n_relation_swaps=2, relation_templates="statements"))
    assert forms and set(forms) == {"statements"}


def test_relation_swaps_are_held_unchanged_in_training(tok):
    with_swaps = plumbing.get_state(edit(tiny_llama(), tok, REQUESTS[0], hparams(n_relation_swaps=5))[0]).last_report
    without = plumbing.get_state(edit(tiny_llama(), tok, REQUESTS[0], hparams())[0]).last_report
    assert with_swaps.held_rows == without.held_rows + 5


def test_edits_saved_before_a_structural_field_existed_take_more_edits(tok, tmp_path):
    model = tiny_llama()
    hp = hparams()
    edit(model, tok, REQUESTS[0], hp)
    del plumbing.get_state(model).hparams["gate_center"]  # as an older artifact's hparams read back
    edit(model, tok, REQUESTS[1], hp)
    assert plumbing.get_state(model).edit_count == 2
    with pytest.raises(ValueError, match="gate_center=True"):
        edit(model, tok, REQUESTS[2], dataclasses.replace(hp, gate_center=True))


SCREEN_POOL = HELD_OUT_PROMPTS + ["The weather today is", "Trains leave from the station at",
                                  "The capital of Spain is", "The capital of Italy is", "The author of Faust is"]


def _pool_file(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(SCREEN_POOL))
    return str(pool)


def test_the_screen_holds_the_pool_prompts_a_held_edit_moves_most(tok, tmp_path):
    """Trained on one sampled pool prompt, an edit is checked on the whole pool once it holds."""
    moved, reports = {}, {}
    for budget, k in ((0.05, 0), (0.05, 4), (0.005, 0), (0.005, 4)):
        model = tiny_llama()
        hp = hparams(layers=[1], locality_source=_pool_file(tmp_path), n_locality_prompts=1,
                     early_stop_locality=budget, screen_negatives=k, n_steps=300 if budget == 0.05 else 100)
        edit(model, tok, REQUESTS[0], hp)
        reports[budget, k] = plumbing.get_state(model).last_report
        assert holds(model, tok, REQUESTS[0])
        moved[budget, k] = _unrelated_peak_change(model, tok, 1, SCREEN_POOL)
    screened = reports[0.05, 4]
    assert screened.screened_in == 4 and screened.held_rows == 1
    assert reports[0.05, 0].steps < screened.steps < 300  # trained on, then met the budget on both groups
    assert screened.unrelated_change <= 0.05
    assert moved[0.05, 4] < 0.5 * moved[0.05, 0]
    # With the tight budget the screened group is out of reach by the cap: the edit ends where it was checked.
    assert reports[0.005, 4].steps == 100 and moved[0.005, 4] == pytest.approx(moved[0.005, 0])
    assert reports[0.005, 4].screened_in == 0  # none was held where it ends


def _screen_of(model, tok, hp, request):
    state = plumbing.get_state(model) or plumbing.attach(model, build_interventions(model, hp), hp.to_dict())
    model.eval()
    batch = build_batch(model, tok, [request], hp, state, hp.layers, random.Random(0))
    return _Screen(model, tok, batch, hp, state, hp.layers[0]), batch, state


def test_the_screen_scores_every_row_as_the_penalty_does_and_picks_the_worst(tok, tmp_path):
    hp = hparams(layers=[1], locality_source=_pool_file(tmp_path), n_locality_prompts=2,
                 early_stop_locality=0.2, screen_negatives=3)
    model = tiny_llama()
    screen, batch, state = _screen_of(model, tok, hp, REQUESTS[0])
    module = randomised(state.interventions[1])
    held = {tuple(tok(text)["input_ids"]) for text in SCREEN_POOL} & batch.held_ids
    assert len(held) == 2 and len(screen.rows) == len(SCREEN_POOL) - 2  # the sampled rows are held already
    texts = [tok.decode(r.ids) for r in screen.rows]
    brute = torch.tensor([_unrelated_peak_change(model, tok, 1, [text]) for text in texts])
    assert screen.scores(module, hp.locality_penalty) == pytest.approx(brute, rel=1e-4)
    ranked = [k for k in brute.argsort(descending=True).tolist() if brute[k] > 0.2][:3]
    assert screen.offenders(module, hp) == ranked
    cache = model.__dict__[STATE_CACHE_ATTR]
    assert all(s is cache.get(tuple(r.ids)) for r, s in zip(screen.rows, screen.states))  # read from the cache


def test_a_screen_that_finds_nothing_changes_nothing(tok, tmp_path, monkeypatch):

    built = []
    monkeypatch.setattr(trainer, "_Screen", lambda *a: built.append(1) or _Screen(*a))
    outputs = []
    for k in (0, 4):
        model = tiny_llama()
        hp = hparams(layers=[1], locality_source=_pool_file(tmp_path), n_locality_prompts=1,
                     early_stop_locality=5.0, screen_negatives=k)  # relative change never reaches 5
        edit(model, tok, REQUESTS[0], hp)
        report = plumbing.get_state(model).last_report
        assert report.screened_in == 0 and len(built) == (k > 0) and ("screen" in report.seconds_by_phase) == (k > 0)
        outputs.append((report.steps, logits(model, tok)))
    assert outputs[0][0] == outputs[1][0] and torch.equal(outputs[0][1], outputs[1][1])


def test_the_screen_reads_earlier_edits_only_from_frozen_bases_and_not_this_prompt(tok):
    again = {**REQUESTS[1], "target_new": "Lima"}
    for grow_rank in (4, 0):
        hp = hparams(layers=[1], early_stop_locality=0.002, screen_negatives=2, grow_rank=grow_rank,
                     replay_at_layer=True, replay_edits=0, n_steps=10)
        model = tiny_llama()
        for request in REQUESTS[:3]:
            edit(model, tok, request, hp)
        screen, _, state = _screen_of(model, tok, hp, again)
        earlier = [r.ids for r in screen.rows if r.n_prompt < len(r.ids)]  # pool rows are all prompt
        if grow_rank:  # REQUESTS[1]'s own is being replaced, not held
            assert earlier == [list(state.replay_memory[k]["ids"]) for k in (0, 2)]
        else:  # the block that trains carries the earlier edits: their prompts are no negatives
            assert earlier == []


def test_an_edit_of_an_edited_prompt_does_not_hold_the_old_edit_unchanged(tok):
    hp = hparams(layers=[1], grow_rank=4, replay_at_layer=True, replay_edits=8, n_steps=10)
    model = tiny_llama()
    for request in REQUESTS[:3]:
        edit(model, tok, request, hp)
    state = plumbing.get_state(model)
    batch = build_batch(model, tok, [{**REQUESTS[1], "target_new": "Lima"}], hp, state, hp.layers, random.Random(0))
    memory = [tuple(m["ids"]) for m in state.replay_memory]
    assert memory[1] not in batch.held_ids and {memory[0], memory[2]} <= batch.held_ids


def test_states_read_in_chunks_are_the_states_read_at_once(tok, monkeypatch):

    model = tiny_llama()
    hp = hparams(layers=[1])
    plumbing.attach(model, build_interventions(model, hp), hp.to_dict())
    rows = [trainer._unrelated_row(tok, text, hp, cacheable=False) for text in SCREEN_POOL]
    at_once = trainer._states_at_interventions(model, [1], rows, torch.device("cpu"))[1]
    monkeypatch.setattr(trainer, "CAPTURE_ROWS", 3)
    calls = []
    capture = plumbing.capture_intervention_inputs
    monkeypatch.setattr(plumbing, "capture_intervention_inputs", lambda *a, **k: calls.append(1) or capture(*a, **k))
    chunked = trainer._states_at_interventions(model, [1], rows, torch.device("cpu"))[1]
    assert len(calls) == -(-len(rows) // 3)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(at_once, chunked))
