"""Faults, odd input, repeated runs and long runs never corrupt the model."""

from __future__ import annotations

import math
import threading
import time
import types

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tiny_models import (
    REQUESTS,
    Fingerprint,
    edit,
    forward_hook_count,
    hparams,
    logits,
    many_requests,
    state_digest,
    target_holds,
    tiny_llama,
)
from easyedit_baft import baft_main
from easyedit_baft import layers as plumbing
from easyedit_baft.requests import RequestError
from easyedit_baft.trainer import NonFiniteError

GOOD = REQUESTS[0]


# --- fault injection ------------------------------------------------------------------------------


class Fault:
    """Wraps a callable so that its `at`-th call raises (or does damage); counts the calls."""

    def __init__(self, original, at: int, action):
        self.original, self.at, self.action, self.calls = original, at, action, 0

    def __call__(self, *args, **kwargs):
        result = self.original(*args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            self.action(*args)
        return result


def raise_(error):
    def action(*_args):
        raise error
    return action


def poison_biases(optimizer, *_args):
    """After a real step, write NaN into every bias (b and c): the next loss is non-finite."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.dim() == 1:
                p.data.fill_(math.nan)


def inject_in_optimizer_step(monkeypatch, action) -> Fault:
    # Fires after the 3rd real step: the interventions have already moved when the fault hits.
    fault = Fault(torch.optim.Adam.step, 3, action)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *args, **kwargs: fault(self, *args, **kwargs))
    return fault


def inject_in_bookkeeping(monkeypatch, action) -> Fault:
    # Fires after training succeeded, while the edit is being recorded (baft_main's own clock only).
    fault = Fault(time.strftime, 1, action)
    monkeypatch.setattr(baft_main, "time", types.SimpleNamespace(strftime=fault))
    return fault


FAULTS = {  # name: (where, what happens there, the error the caller sees, its message)
    "RuntimeError mid-training":
        (inject_in_optimizer_step, raise_(RuntimeError("injected")), RuntimeError, "injected"),
    "KeyboardInterrupt mid-training":
        (inject_in_optimizer_step, raise_(KeyboardInterrupt()), KeyboardInterrupt, None),
    "NaN parameters mid-training":
        (inject_in_optimizer_step, poison_biases, NonFiniteError, "non-finite"),
    "KeyboardInterrupt after training":
        (inject_in_bookkeeping, raise_(KeyboardInterrupt()), KeyboardInterrupt, None),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_fault_during_edit_leaves_model_exactly_as_before(model, tok, monkeypatch, case):
    inject, action, error, match = FAULTS[case]
    before = Fingerprint(model, tok)
    fault = inject(monkeypatch, action)
    with pytest.raises(error, match=match):
        edit(model, tok, GOOD, hparams(early_stop="none", n_steps=6))
    assert fault.calls >= fault.at  # the fault did fire
    monkeypatch.undo()
    before.assert_unchanged()


def test_non_finite_error_names_the_request(tok, monkeypatch):
    inject_in_optimizer_step(monkeypatch, poison_biases)
    with pytest.raises(NonFiniteError) as err:
        edit(tiny_llama(), tok, GOOD, hparams(early_stop="none", n_steps=6))
    assert GOOD["prompt"] in str(err.value)


def test_model_edits_normally_after_a_failed_edit(tok, monkeypatch):
    model = tiny_llama()
    inject_in_optimizer_step(monkeypatch, raise_(RuntimeError("injected")))
    with pytest.raises(RuntimeError):
        edit(model, tok, GOOD, hparams(early_stop="none", n_steps=6))
    monkeypatch.undo()
    edit(model, tok, GOOD)
    assert target_holds(model, tok, GOOD["prompt"], GOOD["target_new"])
    assert plumbing.get_state(model).edit_count == 1


# --- random odd requests --------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "Wasser kocht bei", "日本の首都は", "My pet 🐍 eats"]
TARGETS = ["Rome", "Zürich", "大阪", "🎉", "x"]
text = st.one_of(
    st.sampled_from(PROMPTS + TARGETS + ["", " ", "\t\n", "\u200b"]),
    st.text(max_size=6),
)
odd_value = st.one_of(text, st.none(), st.integers(), st.floats(), st.binary(max_size=3),
                      st.lists(st.text(max_size=2), max_size=2))


@st.composite
def odd_request(draw, odd_share: int = 1):
    """A request whose fields are typical, odd (any type, empty, unicode) or missing.

    odd_share 1 gives mostly well-formed requests (edits that must hold), 4 mostly malformed ones.
    """
    request = {}
    for field in ("prompt", "target_new"):
        choice = draw(st.sampled_from(["typical"] * 6 + ["odd"] * odd_share + ["missing"] * (odd_share > 1)))
        if choice != "missing":
            pool = PROMPTS if field == "prompt" else TARGETS
            request[field] = draw(st.sampled_from(pool) if choice == "typical" else odd_value)
    subject = draw(st.sampled_from(["none"] * 3 + ["from prompt"] * 3 + ["odd"] * odd_share))
    if subject == "from prompt" and isinstance(request.get("prompt"), str) and request["prompt"]:
        start = draw(st.integers(0, len(request["prompt"]) - 1))
        request["subject"] = request["prompt"][start:start + draw(st.integers(1, 5))]
    elif subject == "odd":
        request["subject"] = draw(odd_value)
    loc = draw(st.sampled_from(["none"] * 4 + ["typical"] + ["odd"] * odd_share))
    if loc != "none":  # WISE's training-time unrelated prompt
        request["loc_prompt"] = draw(st.sampled_from(PROMPTS) if loc == "typical" else odd_value)
    return request


odd_requests = st.integers(0, 9).flatmap(lambda k: [
    st.lists(odd_request(), min_size=1, max_size=3),  # six in ten: mostly well-formed, edits must hold
    st.lists(odd_request(odd_share=4), max_size=3),
    st.lists(odd_request(), min_size=1, max_size=2).map(lambda rs: rs + [dict(rs[0])]),  # a duplicate
    odd_request(odd_share=4),
    odd_value,
][max(k - 5, 0)])


@pytest.fixture(scope="module")
def base_model(tok):
    model = tiny_llama()
    return model, Fingerprint(model, tok)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests=odd_requests)
def test_odd_requests_give_a_clean_error_or_an_edit_that_holds(base_model, tok, requests):
    model, before = base_model
    try:
        _, restore = edit(model, tok, requests, hparams(max_length=64), return_orig_weights=True)
    except (RequestError, ValueError, TypeError) as err:
        event(f"refused: {type(err).__name__}")
        before.assert_unchanged()
        return
    event("edited")
    batch = [requests] if isinstance(requests, dict) else list(requests)
    prompts = [r["prompt"] for r in batch]
    for r in batch:
        if prompts.count(r["prompt"]) == 1:  # one prompt with two targets cannot hold both
            assert target_holds(model, tok, r["prompt"], r["target_new"]), r
    assert plumbing.get_state(model).edit_count == len(batch)
    restore()
    before.assert_unchanged()


visible_text = st.text(min_size=1, max_size=8).filter(lambda t: t.strip() != "")


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prompt=visible_text, target=visible_text.filter(lambda t: len(t) <= 5))
def test_random_unicode_request_edits_and_holds(base_model, tok, prompt, target):
    model, before = base_model
    _, restore = edit(model, tok, {"prompt": prompt, "target_new": target}, return_orig_weights=True)
    try:
        assert target_holds(model, tok, prompt, target)
    finally:
        restore()
    before.assert_unchanged()


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_request_and_model_give_bit_identical_edits(tok):
    runs = []
    for _ in range(2):
        model = tiny_llama(seed=3)
        for request in REQUESTS[:2]:
            edit(model, tok, request)
        runs.append((logits(model, tok), state_digest(model)[1:]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_edit_neither_depends_on_nor_changes_the_global_torch_rng(tok):
    outputs = []
    for global_seed in (1, 2):
        model = tiny_llama()
        torch.manual_seed(global_seed)
        rng_before = torch.get_rng_state()
        edit(model, tok, GOOD)
        assert torch.equal(torch.get_rng_state(), rng_before)
        outputs.append(logits(model, tok))
    assert torch.equal(*outputs)


def test_different_seed_gives_a_different_edit(tok):
    outputs = []
    for seed in (0, 1):
        model = tiny_llama()
        edit(model, tok, GOOD, hparams(seed=seed))
        outputs.append(logits(model, tok))
    assert not torch.equal(*outputs)


# --- a long run -----------------------------------------------------------------------------------


def test_thirty_sequential_edits_keep_bookkeeping_consistent(tok):
    model = tiny_llama()
    weights = Fingerprint(model, tok).weights
    hp = hparams(n_steps=8)  # bookkeeping, not edit quality, is under test: cap the cost
    usage_before = None
    for k, request in enumerate(many_requests(30), start=1):
        edit(model, tok, request, hp)
        state = plumbing.get_state(model)
        assert state.edit_count == len(state.edit_log) == len(state.replay_memory) == k
        assert forward_hook_count(model) == len(state.hooks) == len(hp.layers)
        usage = torch.stack([state.interventions[i].basis_usage for i in hp.layers])
        assert bool(torch.isfinite(usage).all())
        if usage_before is not None:
            assert bool((usage >= usage_before).all())
        usage_before = usage.clone()
    assert Fingerprint(model, tok).weights == weights
    assert [e["prompt"] for e in state.edit_log] == [r["prompt"] for r in many_requests(30)]
    assert bool((usage_before > 0).any())


# --- two models in one process --------------------------------------------------------------------


def test_editing_one_model_leaves_another_untouched(tok):
    first, second = tiny_llama(), tiny_llama()
    edit(second, tok, REQUESTS[1])
    second_before = Fingerprint(second, tok)
    edit(first, tok, GOOD)
    second_before.assert_unchanged()
    assert plumbing.get_state(first) is not plumbing.get_state(second)
    assert target_holds(first, tok, GOOD["prompt"], GOOD["target_new"])
    assert not target_holds(second, tok, GOOD["prompt"], GOOD["target_new"])
    assert [e["prompt"] for e in plumbing.get_state(second).edit_log] == [REQUESTS[1]["prompt"]]


def test_two_models_edited_in_parallel_threads_match_editing_them_one_by_one(tok):
    jobs = [(REQUESTS[0], 0), (REQUESTS[2], 1)]
    alone = []
    for request, seed in jobs:
        model = tiny_llama(seed)
        edit(model, tok, request)
        alone.append(logits(model, tok))

    models = [tiny_llama(seed) for _, seed in jobs]
    errors = []

    def work(model, request):
        try:
            edit(model, tok, request)
        except BaseException as err:  # surfaced below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=work, args=(m, r)) for m, (r, _) in zip(models, jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for model, (request, _), expected in zip(models, jobs, alone):
        assert torch.equal(logits(model, tok), expected)
        assert [e["prompt"] for e in plumbing.get_state(model).edit_log] == [request["prompt"]]
