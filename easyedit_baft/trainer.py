"""The training loop of one BaFT edit (one request or a batch trained together).

    L = L_edit + lambda_loc * (unrelated_change + kl_weight * KL) + lambda_lb * L_lb

Only the interventions' parameters train; the model stays frozen and its .grad untouched.
Three parts: build_batch (rows and cached states), loss_terms (one forward above the intervened
layer, the named terms) and train_edit (a short loop). The locality terms read states captured
at the intervened layer, so they cost no forward pass above it.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import layers as plumbing
from .hparams import BaFTHyperParams
from .prompt_sources import CONTEXT_PREFIXES, relation_swapped_prompts, subject_swapped_prompts, unrelated_prompts
from .requests import pad_id_of, pad_rows, target_token_ids


class NonFiniteError(FloatingPointError):
    """The loss or the gates became NaN or inf; the edit was abandoned."""


@dataclass
class EditReport:
    steps: int  # forward passes above the intervened layer
    seconds: float
    final_loss: float
    edit_loss: float
    holds: bool  # every target token that early stop waits for is the argmax
    unrelated_change: float = math.nan  # the locality penalty on unrelated prompts, worst group (nan: none)
    rows: int = 0  # rows in each forward pass
    held_rows: int = 0  # rows held unchanged at the intervened layer (unrelated, replayed at the layer)
    screened_in: int = 0  # rows the screen of pool and earlier prompts held besides those (screen_negatives)
    tokens: int = 0  # real tokens in each forward pass
    seconds_by_phase: Dict[str, float] = field(default_factory=dict)


class RowKind(enum.Enum):
    EDIT = "edit"  # a request's prompt and target
    CONTEXT = "context"  # the same after a short neutral prefix
    REPLAY = "replay"  # an earlier edit's prompt and target, trained again
    UNRELATED = "unrelated"  # must stay as it was; scored at the intervened layer


@dataclass
class _Row:
    ids: List[int]
    n_prompt: int  # positions before this are context; the target starts here
    kind: RowKind
    cacheable: bool = False  # its states at the intervened layer may be reused by later edits


class _Timer:
    """Seconds spent per named phase of one edit."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


# --- building the batch ----------------------------------------------------------------------


def _edit_rows(tok, requests: List[dict], hp: BaFTHyperParams, rng: random.Random) -> List[_Row]:
    rows = []
    prefixes = rng.sample(CONTEXT_PREFIXES, min(hp.n_context_prefixes, len(CONTEXT_PREFIXES)))
    for i, request in enumerate(requests):
        where = f"request {i} (prompt {request['prompt']!r:.60})"
        ids, n_prompt = target_token_ids(tok, request["prompt"], request["target_new"], hp.max_length, where)
        rows.append(_Row(ids, n_prompt, RowKind.EDIT))
        for prefix in prefixes:
            ids, n_prompt = target_token_ids(
                tok, f"{prefix} {request['prompt']}", request["target_new"], hp.max_length + 16, where
            )
            rows.append(_Row(ids, n_prompt, RowKind.CONTEXT))
    return rows


def _unrelated_rows(tok, requests: List[dict], hp: BaFTHyperParams, rng: random.Random) -> List[_Row]:
    pool = unrelated_prompts(hp.locality_source)
    chosen = [(text, True) for text in rng.sample(pool, min(hp.n_locality_prompts, len(pool)))]
    # WISE's convention: the caller may pass its own unrelated prompt with each request.
    chosen += [(r["loc_prompt"], False) for r in requests if r.get("loc_prompt")]
    for request in requests:
        swapped = subject_swapped_prompts(request["prompt"], request.get("subject"), hp.n_subject_swaps, rng)
        swapped += relation_swapped_prompts(request["prompt"], request.get("subject"), hp.n_relation_swaps, rng,
                                            hp.relation_templates)
        chosen += [(text, False) for text in swapped]
    return [row for row in (_unrelated_row(tok, text, hp, cacheable) for text, cacheable in chosen) if row]


def _unrelated_row(tok, text: str, hp: BaFTHyperParams, cacheable: bool) -> Optional[_Row]:
    """A prompt held unchanged, scored on all its tokens; None when it tokenizes to nothing."""
    ids = tok(text)["input_ids"][-hp.max_length:]
    return _Row(ids, len(ids), RowKind.UNRELATED, cacheable) if ids else None


def _input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


STATE_CACHE_ATTR = "_baft_state_cache"
STATE_CACHE_BYTES = 256 * 2**20  # the oldest rows go first beyond this
CAPTURE_ROWS = 256  # rows run through the model at once (the screen's first read is the whole pool)


def _weights_key(model) -> tuple:
    """Changes when a weight is replaced or written: storages, version counters (in-place ops) and
    a sampled fingerprint of the values (writes through .data bump no version counter)."""
    return (tuple((p.data_ptr(), p._version) for p in model.parameters()), plumbing.base_model_fingerprint(model))


class _StateCache:
    """Pre-edit states at the intervened layer of rows that recur across edits (pool prompts,
    earlier edits), valid while the model's weights are unchanged. A deep copy of the model gets
    none: its weights are new tensors."""

    def __init__(self, key):
        self.key, self.states, self.nbytes = key, OrderedDict(), 0

    def __deepcopy__(self, memo):
        return None

    def get(self, ids: tuple):
        hit = self.states.get(ids)
        if hit is not None:
            self.states.move_to_end(ids)
        return hit

    def put(self, ids: tuple, state: torch.Tensor) -> None:
        self.states[ids] = state
        self.nbytes += state.numel() * state.element_size()

    def evict(self) -> None:
        while self.nbytes > STATE_CACHE_BYTES and self.states:
            _, old = self.states.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


def _states_at_interventions(model, indices: List[int], rows: List[_Row], device) -> Dict[int, List[torch.Tensor]]:
    """Each row's hidden states at each intervened layer, (len(ids), d) per row.

    With one intervened layer, its input does not depend on any edit: the states are read with
    the interventions off, and cacheable rows are kept on the model for later edits. With several,
    upper layers must see the lower layers' edits: every row is captured afresh, interventions on.
    """
    cache = None
    if len(indices) == 1:
        key = (tuple(indices), _weights_key(model))
        cache = model.__dict__.get(STATE_CACHE_ATTR)
        if cache is None or cache.key != key:
            cache = model.__dict__[STATE_CACHE_ATTR] = _StateCache(key)
    hits = {id(r): cache.get(tuple(r.ids)) for r in rows if r.cacheable} if cache else {}
    missing = [r for r in rows if hits.get(id(r)) is None]
    fresh: Dict[int, Dict[int, torch.Tensor]] = {}
    for start in range(0, len(missing), CAPTURE_ROWS):
        chunk = missing[start:start + CAPTURE_ROWS]
        batch = pad_rows([r.ids for r in chunk], [len(r.ids) for r in chunk], pad_id=0).to(device)
        with plumbing.interventions_disabled(model) if cache else contextlib.nullcontext():
            captured = plumbing.capture_intervention_inputs(
                model, indices, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        # Cloned: a view would keep the whole padded capture alive in the cache.
        fresh.update({id(r): {i: captured[i][k, : len(r.ids)].clone() for i in indices} for k, r in enumerate(chunk)})
    out: Dict[int, List[torch.Tensor]] = {i: [] for i in indices}
    for r in rows:
        per_layer = fresh.get(id(r)) or {indices[0]: hits[id(r)]}
        if cache and r.cacheable and id(r) in fresh:
            cache.put(tuple(r.ids), per_layer[indices[0]])
        for i in indices:
            out[i].append(per_layer[i])
    if cache:
        cache.evict()  # after every hit was read: evicting earlier could drop one
    return out


def _pad_states(states: List[torch.Tensor]) -> tuple:
    """(B, T, d) zero-padded states and their (B, T) mask."""
    width = max(s.shape[0] for s in states)
    padded = states[0].new_zeros(len(states), width, states[0].shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.bool, device=states[0].device)
    for k, s in enumerate(states):
        padded[k, : s.shape[0]], mask[k, : s.shape[0]] = s, True
    return padded, mask


@dataclass
class EditBatch:
    """Everything the loss reads, built once per edit."""

    rows: List[_Row]
    tokens: object  # TokenizedBatch of the rows that run through the model
    scored: torch.Tensor  # (B,) rows whose target tokens train
    must_hold: torch.Tensor  # (B,) rows early stop waits for
    target_pos: torch.Tensor  # (B, T-1) next-token positions that train
    layer_input: torch.Tensor  # inputs of the lowest intervened layer: the frozen layers below run once
    unrelated_states: Optional[Dict[int, torch.Tensor]]  # per layer, (U, T, d), held unchanged there
    unrelated_mask: Optional[torch.Tensor]
    reference: Optional[torch.Tensor]  # pre-edit log-probs at unrelated positions, for the KL term
    unrelated_pos: Optional[torch.Tensor]
    held_ids: set = field(default_factory=set)  # token ids of the held rows: the screen skips them
    # Rows the screen added (screen_negatives): a group of their own, held to the budget by themselves.
    screened_states: Optional[Dict[int, torch.Tensor]] = None
    screened_mask: Optional[torch.Tensor] = None


def _earlier_edits_held(hp: BaFTHyperParams, state: plumbing.BaFTState) -> bool:
    """After grow, earlier edits live in frozen bases: the fresh block only has to leave their prompts
    alone, which replay_at_layer checks at the layer. Sharing bases, they train again."""
    return hp.replay_at_layer and hp.grow_rank > 0 and state.edit_count > 0


def _earlier_edits_except(state: plumbing.BaFTState, rows: List[_Row]) -> List[dict]:
    """The replay memory less earlier edits of this call's prompts: those are being replaced, not kept."""
    own = {tuple(r.ids[:r.n_prompt]) for r in rows if r.kind is RowKind.EDIT}
    return [m for m in state.replay_memory if tuple(m["ids"][:m["n_prompt"]]) not in own]


def _memory_row(entry: dict, kind: RowKind) -> _Row:
    """An earlier edit's prompt and target from the replay memory; its states may be cached."""
    return _Row(list(entry["ids"]), entry["n_prompt"], kind, cacheable=True)


def _row_mask(rows: List[_Row], kinds, device) -> torch.Tensor:
    return torch.tensor([r.kind in kinds for r in rows], device=device)


def build_batch(model, tok, requests: List[dict], hp: BaFTHyperParams, state: plumbing.BaFTState,
                indices: List[int], rng: random.Random) -> EditBatch:
    device = _input_device(model)
    rows = _edit_rows(tok, requests, hp, rng)
    memory = _earlier_edits_except(state, rows)
    replayed = rng.sample(memory, min(hp.replay_edits, len(memory)))
    unrelated = _unrelated_rows(tok, requests, hp, rng)
    held_at_layer = _earlier_edits_held(hp, state)
    for m in replayed:
        row = _memory_row(m, RowKind.UNRELATED if held_at_layer else RowKind.REPLAY)
        (unrelated if held_at_layer else rows).append(row)
    use_kl = hp.lambda_loc > 0 and hp.kl_weight > 0 and bool(unrelated)
    forward_rows = rows + (unrelated if use_kl else [])  # the KL term needs their full forward pass

    tokens = pad_rows([r.ids for r in forward_rows], [r.n_prompt for r in forward_rows], pad_id_of(tok)).to(device)
    scored = _row_mask(forward_rows, (RowKind.EDIT, RowKind.CONTEXT, RowKind.REPLAY), device)
    # Early stop waits for this call's edits, and for replayed ones only when asked: waiting for
    # replays ran late sequential edits to the step cap (20 ZsRE edits: 23 s vs 13 s per edit).
    hold_kinds = (RowKind.EDIT, RowKind.REPLAY) if hp.early_stop_waits_for_replay else (RowKind.EDIT,)
    must_hold = _row_mask(forward_rows, hold_kinds, device)
    target_pos = (tokens.labels[:, 1:] != -100) & scored[:, None]

    with torch.no_grad():
        layer_input = plumbing.capture_layer_input(model, indices[0], input_ids=tokens.input_ids,
                                                   attention_mask=tokens.attention_mask)
        reference = unrelated_pos = None
        if use_kl:
            unrelated_pos = tokens.attention_mask[:, 1:].bool() & _row_mask(forward_rows, (RowKind.UNRELATED,), device)[:, None]
            hidden = model.base_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                      use_cache=False).last_hidden_state[:, :-1]
            reference = F.log_softmax(model.get_output_embeddings()(hidden[unrelated_pos]).float(), -1)
        unrelated_states = unrelated_mask = None
        # With gate='ones' (ReFT) only the change penalty is meaningful; the gate mean is constant.
        if unrelated and hp.lambda_loc > 0 and not (hp.gate == "ones" and hp.locality_penalty == "gate_mean"):
            per_layer = _states_at_interventions(model, indices, unrelated, device)
            unrelated_states = {}
            for i in indices:
                unrelated_states[i], unrelated_mask = _pad_states(per_layer[i])
            unrelated_states = {i: s.float() for i, s in unrelated_states.items()}
    return EditBatch(forward_rows, tokens, scored, must_hold, target_pos, layer_input,
                     unrelated_states, unrelated_mask, reference, unrelated_pos, {tuple(r.ids) for r in unrelated})


class _Screen:
    """Prompts a held edit is checked on: the whole unrelated pool and, once earlier edits sit in
    frozen bases, every earlier edit's prompt. Their states at the one intervened layer come from
    the state cache after the first edit that reads them."""

    def __init__(self, model, tok, batch: EditBatch, hp: BaFTHyperParams, state: plumbing.BaFTState, index: int):
        rows = [_unrelated_row(tok, text, hp, cacheable=True) for text in unrelated_prompts(hp.locality_source)]
        if _earlier_edits_held(hp, state):
            rows += [_memory_row(m, RowKind.UNRELATED) for m in _earlier_edits_except(state, batch.rows)]
        self.rows = [r for r in rows if r and tuple(r.ids) not in batch.held_ids]  # held rows are held already
        self.states = _states_at_interventions(model, [index], self.rows, _input_device(model))[index] if self.rows else []

    @torch.no_grad()
    def scores(self, module: plumbing.BaFTIntervention, rule: str) -> torch.Tensor:
        """Each row's locality measure (the penalty's, per row) under the trainable bases, (rows,)."""
        out = [torch.zeros(0, device=module.rotation.device)]
        for start in range(0, len(self.states), CAPTURE_ROWS):
            states, mask = _pad_states(self.states[start:start + CAPTURE_ROWS])
            out.append(_row_locality(module, states.float(), mask, rule).to(out[0].device))
        return torch.cat(out)

    def offenders(self, module: plumbing.BaFTIntervention, hp: BaFTHyperParams) -> List[int]:
        """Up to screen_negatives rows the trainable bases move most, of those beyond early_stop_locality."""
        scores = self.scores(module, hp.locality_penalty)
        top = scores.topk(min(hp.screen_negatives, len(scores)))
        return [row for value, row in zip(top.values.tolist(), top.indices.tolist()) if value > hp.early_stop_locality]


# --- the loss --------------------------------------------------------------------------------


def _gate_mean(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean gate vector per row over real tokens: (B, T, r), (B, T) -> (B, r)."""
    mask = mask.to(gates.dtype).unsqueeze(-1)
    return (gates * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _gate_peak(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Largest value per row over real tokens: (B, T, k), (B, T) -> (B, k); values are >= 0."""
    return (gates * mask.to(gates.dtype).unsqueeze(-1)).amax(1)


def _row_locality(module: plumbing.BaFTIntervention, states: torch.Tensor, mask: torch.Tensor,
                  rule: str) -> torch.Tensor:
    """How much the trainable bases touch each unrelated prompt (states: the inputs there, (B, T, d)), (B,).

    Frozen bases (after grow) are left out: this edit cannot change what they do.
    """
    if rule == "gate_mean":
        return _gate_mean(module.gates(states, trainable_only=True), mask).mean(-1)
    # 'change_peak': the relative change of the hidden state at each prompt's worst position.
    # A gate alone can look small while large coordinates behind it still move the state.
    relative = module.change(states, trainable_only=True).norm(dim=-1) / states.norm(dim=-1).clamp_min(1e-6)
    return _gate_peak(relative.unsqueeze(-1), mask)[:, 0]


def _locality_penalty(module: plumbing.BaFTIntervention, states: torch.Tensor, mask: torch.Tensor,
                      rule: str) -> torch.Tensor:
    """_row_locality's mean over rows (gate_mean: over rows and bases at once, as it always was)."""
    if rule == "gate_mean":
        return _gate_mean(module.gates(states, trainable_only=True), mask).mean()
    return _row_locality(module, states, mask, rule).mean()


def unrelated_change(batch: EditBatch, modules: Dict[int, plumbing.BaFTIntervention], hp: BaFTHyperParams):
    """The locality penalty per group of held rows (the batch's, then the screened ones), each a mean
    over its rows and the intervened layers; None when no unrelated states."""
    if batch.unrelated_states is None:
        return None
    groups = [(batch.unrelated_states, batch.unrelated_mask)]
    if batch.screened_states is not None:
        groups.append((batch.screened_states, batch.screened_mask))
    return torch.stack([
        torch.stack([_locality_penalty(m, states[i], mask, hp.locality_penalty) for i, m in modules.items()]).mean()
        for states, mask in groups])


def _load_balance(module: plumbing.BaFTIntervention, edit_gates: torch.Tensor, edit_count: int) -> torch.Tensor:
    """Incremental term (pay for bases past edits use) plus a Switch-style term within a batch."""
    prior = module.basis_usage / max(edit_count, 1)
    loss = (prior.to(edit_gates.device) * edit_gates).sum(-1).mean()
    if edit_gates.shape[0] > 1:
        share = edit_gates / edit_gates.sum(-1, keepdim=True).clamp_min(1e-8)
        loss = loss + module.rank * (share.mean(0) ** 2).sum() - 1.0
    return loss


def _edit_gates(module: plumbing.BaFTIntervention, batch: EditBatch) -> torch.Tensor:
    """Mean gates of this call's edit rows in the last forward pass, (n_requests, r)."""
    edit_rows = [k for k, r in enumerate(batch.rows) if r.kind is RowKind.EDIT]
    return _gate_mean(module.last_gates, batch.tokens.attention_mask)[edit_rows]


def loss_terms(model, batch: EditBatch, modules: Dict[int, plumbing.BaFTIntervention], hp: BaFTHyperParams,
               edit_count: int, timer: _Timer) -> tuple:
    """One forward pass above the intervened layer: (named loss terms, does the edit hold, the
    locality penalty of the worst group of held rows as a float or nan)."""
    tokens = batch.tokens
    with timer("forward"):
        hidden = model.base_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                  use_cache=False).last_hidden_state[:, :-1]
    head = model.get_output_embeddings()
    terms = {}
    with timer("loss_edit"):
        target_logits = head(hidden[batch.target_pos]).float()
        target_ids = tokens.labels[:, 1:][batch.target_pos]
        token_nll = F.cross_entropy(target_logits, target_ids, reduction="none")
        # Mean per row first, so long targets do not outweigh short ones.
        row_of = batch.target_pos.nonzero()[:, 0]
        n_rows = tokens.input_ids.shape[0]
        row_nll = torch.zeros(n_rows, device=hidden.device).index_add(0, row_of, token_nll)
        row_len = torch.zeros(n_rows, device=hidden.device).index_add(0, row_of, torch.ones_like(token_nll))
        terms["edit"] = (row_nll[batch.scored] / row_len[batch.scored].clamp_min(1)).mean()
    with timer("stop_test"):
        holds = bool((target_logits.argmax(-1) == target_ids)[batch.must_hold[row_of]].all())
    with timer("loss_locality"):
        change = unrelated_change(batch, modules, hp)
        if change is not None:
            terms["locality"] = hp.lambda_loc * change.sum()
    if batch.reference is not None:
        with timer("loss_kl"):
            current = F.log_softmax(head(hidden[batch.unrelated_pos]).float(), -1)
            kl = F.kl_div(current, batch.reference, log_target=True, reduction="batchmean")
            terms["kl"] = hp.lambda_loc * hp.kl_weight * kl
    if hp.lambda_lb > 0 and hp.gate == "learned":
        with timer("loss_load_balance"):
            terms["load_balance"] = hp.lambda_lb * torch.stack(
                [_load_balance(m, _edit_gates(m, batch), edit_count) for m in modules.values()]).mean()
    return terms, holds, (change.max().item() if change is not None else math.nan)


# --- the loop --------------------------------------------------------------------------------


@dataclass
class _KeptStep:
    """A training step's parameters, its report and its edit rows' gates, to end the edit there."""

    report: EditReport
    params: List[torch.Tensor]
    usage: Dict[int, torch.Tensor]

    @classmethod
    def of(cls, report, params, modules, batch) -> "_KeptStep":
        return cls(report, [p.detach().clone() for p in params],
                   {i: _edit_gates(m, batch).detach() for i, m in modules.items()})

    @torch.no_grad()
    def restore(self, params, steps: int) -> EditReport:
        for p, saved in zip(params, self.params):
            p.copy_(saved)
        self.report.steps = steps  # the forward passes spent, not the step kept
        return self.report


def train_edit(model, tok, requests: List[dict], hp: BaFTHyperParams, state: plumbing.BaFTState) -> EditReport:
    """Fit the interventions in `state` so that `requests` hold; edits before stay in place."""
    start, timer = time.perf_counter(), _Timer()
    rng = random.Random(hp.seed + state.edit_count)
    indices = sorted(state.interventions)
    modules = {i: state.interventions[i] for i in indices}
    was_training = model.training
    model.eval()  # before the batch: states captured (and cached) must carry no dropout noise
    report = EditReport(0, 0.0, math.nan, math.nan, False)
    try:
        with timer("setup"):
            batch = build_batch(model, tok, requests, hp, state, indices, rng)
            # Read here, outside reuse_layer_input: within it the layers below are skipped.
            screen = None
            if hp.screen_negatives and batch.unrelated_states is not None:
                screen = _Screen(model, tok, batch, hp, state, indices[0])
        params = [p for m in modules.values() for p in m.parameters()]
        optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        for m in modules.values():
            m.record_gates = True
        kept = None  # the in-budget step with the lowest edit loss: where a capped edit that never held ends
        held = None  # the step that held with the lowest penalty: where a capped edit that held ends
        kept_usage = None  # its edit rows' gates, once the edit ends there
        screened_in, fallback = 0, None  # rows the screen added; the checked step, which held
        with plumbing.reuse_layer_input(model, indices[0], batch.layer_input):
            for step in tqdm(range(hp.n_steps), desc="BaFT edit", leave=False, disable=None):
                with torch.enable_grad():
                    terms, holds, unrelated = loss_terms(model, batch, modules, hp, state.edit_count, timer)
                    loss = sum(terms.values())
                    if not torch.isfinite(loss) or any(not torch.isfinite(m.last_gates).all() for m in modules.values()):
                        raise NonFiniteError(
                            f"non-finite loss or gates at step {step} while editing "
                            f"{[r['prompt'] for r in requests]!r:.200}; lower lr (now {hp.lr}) or check the model's dtype")
                    report = EditReport(step + 1, 0.0, loss.item(), terms["edit"].item(), holds, unrelated)
                    edit_done = (hp.early_stop == "argmax" and holds) or (
                        hp.early_stop == "loss" and report.edit_loss < hp.early_stop_loss)
                    budgeted = hp.early_stop_locality is not None and not math.isnan(unrelated)
                    local_enough = not budgeted or unrelated <= hp.early_stop_locality
                    if edit_done and local_enough:
                        if screen is None:
                            break
                        with timer("screen"):
                            picked = screen.offenders(modules[indices[0]], hp)
                            if not picked:
                                break
                            states, batch.screened_mask = _pad_states([screen.states[k] for k in picked])
                            batch.screened_states, screened_in = {indices[0]: states.float()}, len(picked)
                            # Checked once. Should the cap come first, the edit ends here: it holds.
                            fallback, screen = _KeptStep.of(report, params, modules, batch), None
                            # This step trains on the new group too (its term, as loss_terms adds it).
                            loss = loss + hp.lambda_loc * unrelated_change(batch, modules, hp)[-1]
                    if budgeted and local_enough and fallback is None and (
                            kept is None or report.edit_loss < kept.report.edit_loss):
                        kept = _KeptStep.of(report, params, modules, batch)
                    if budgeted and edit_done and (held is None or unrelated < held.report.unrelated_change):
                        held = _KeptStep.of(report, params, modules, batch)
                    with timer("backward"):
                        grads = torch.autograd.grad(loss, params, allow_unused=True)
                with timer("optimizer"):
                    for p, g in zip(params, grads):
                        p.grad = g
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    for m in modules.values():
                        m.retract()
            else:
                # The step cap: the last step's locality is untested, maybe unmet. An edit that held
                # ends at its most local step that held, unless that is beyond cap_locality; a failed
                # edit must not shift every input, so it ends at its best step within the budget.
                within_cap = held is not None and (
                    hp.cap_locality is None or held.report.unrelated_change <= hp.cap_locality)
                kept = fallback or (held if within_cap else None) or kept or held
                if kept is not None:
                    report, kept_usage = kept.restore(params, hp.n_steps), kept.usage
                if fallback is not None:
                    screened_in = 0  # it ends at the checked step, where no screened row was held yet
        # Record which bases this edit opens (gates of the step it ends at), for later edits' balancing.
        with torch.no_grad():
            for i, m in modules.items():
                usage = kept_usage[i] if kept_usage is not None else _edit_gates(m, batch)
                m.basis_usage += usage.detach().sum(0).to(m.basis_usage.device)
    finally:
        for m in modules.values():
            m.record_gates, m.last_gates = False, None
        model.train(was_training)

    for r in batch.rows:
        if r.kind is RowKind.EDIT:
            state.replay_memory.append({"ids": tuple(r.ids), "n_prompt": r.n_prompt})
    report.rows, report.tokens = batch.tokens.input_ids.shape[0], int(batch.tokens.attention_mask.sum())
    report.held_rows = 0 if batch.unrelated_mask is None else batch.unrelated_mask.shape[0]
    report.screened_in = screened_in
    report.seconds = time.perf_counter() - start
    report.seconds_by_phase = timer.seconds
    return report


def build_interventions(model, hp: BaFTHyperParams, rank: Optional[int] = None) -> Dict[int, plumbing.BaFTIntervention]:
    """Fresh, identity-at-init interventions of `rank` bases (default hp.rank) for hp.layers, seeded by hp.seed."""
    d, n_layers = plumbing.hidden_size(model), len(plumbing.decoder_layers(model))
    rank = hp.rank if rank is None else rank
    bad = [i for i in hp.layers if i >= n_layers]
    if bad:
        raise ValueError(f"layers={hp.layers}: {bad} out of range; this model has layers 0..{n_layers - 1}")
    if rank > d:
        raise ValueError(f"rank={rank} exceeds the model's hidden size {d}; use rank <= {d}")
    generator = torch.Generator().manual_seed(hp.seed)
    return {
        i: plumbing.BaFTIntervention(
            d, rank, hp.gate_temperature, hp.gate_init_bias, hp.gate_init_std, hp.gate, generator,
            hp.gate_input_norm, hp.gate_floor, hp.gate_center,
        )
        for i in hp.layers
    }


GATE_CENTER_PROMPTS = 256  # unrelated prompts whose tokens estimate mu (their order is the pool's)


@torch.no_grad()
def fit_gate_centers(model, tok, interventions: Dict[int, plumbing.BaFTIntervention], hp: BaFTHyperParams) -> None:
    """Set each intervention's gate center mu: the mean gate input over the unrelated pool's tokens,
    read from the model before any edit (so it is the same whatever is edited first)."""
    pool = unrelated_prompts(hp.locality_source)[:GATE_CENTER_PROMPTS]
    rows = [row for row in (_unrelated_row(tok, text, hp, cacheable=True) for text in pool) if row]
    if not rows:
        raise ValueError(f"gate_center needs unrelated prompts; locality_source={hp.locality_source!r} gave none")
    indices = sorted(interventions)
    was_training = model.training
    model.eval()  # no dropout noise in mu
    try:
        # Cacheable like the edits' own pool rows: the first edit reads those it samples back.
        states = _states_at_interventions(model, indices, rows, _input_device(model))
    finally:
        model.train(was_training)
    for i in indices:
        interventions[i].set_gate_center(interventions[i].gate_input(torch.cat(states[i]).float()).mean(0))
