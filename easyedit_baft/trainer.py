"""The training loop of one BaFT edit (one request or a batch trained together).

    L = L_edit + lambda_loc * (unrelated_change + kl_weight * KL) + lambda_lb * L_lb

Only the interventions' parameters train; the model stays frozen and its .grad untouched.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import layers as plumbing
from .hparams import BaFTHyperParams
from .prompt_sources import CONTEXT_PREFIXES, subject_swapped_prompts, unrelated_prompts
from .requests import pad_id_of, pad_rows, target_token_ids


class NonFiniteError(FloatingPointError):
    """The loss or the gates became NaN or inf; the edit was abandoned."""


@dataclass
class EditReport:
    steps: int
    seconds: float
    final_loss: float
    edit_loss: float
    holds: bool  # every target token that early stop waits for is the argmax
    unrelated_change: float = math.nan  # the locality penalty on unrelated prompts (nan: none were used)


@dataclass
class _Row:
    ids: List[int]
    n_prompt: int  # positions before this are context; the target starts here
    kind: str  # 'edit', 'context' (edit after a prefix), 'replay' or 'unrelated'
    request: int = -1  # index into this call's requests, for edit rows


def _edit_rows(tok, requests: List[dict], hp: BaFTHyperParams, rng: random.Random) -> List[_Row]:
    rows = []
    prefixes = rng.sample(CONTEXT_PREFIXES, min(hp.n_context_prefixes, len(CONTEXT_PREFIXES)))
    for i, request in enumerate(requests):
        where = f"request {i} (prompt {request['prompt']!r:.60})"
        ids, n_prompt = target_token_ids(tok, request["prompt"], request["target_new"], hp.max_length, where)
        rows.append(_Row(ids, n_prompt, "edit", i))
        for prefix in prefixes:
            ids, n_prompt = target_token_ids(
                tok, f"{prefix} {request['prompt']}", request["target_new"], hp.max_length + 16, where
            )
            rows.append(_Row(ids, n_prompt, "context", i))
    return rows


def _unrelated_rows(tok, requests: List[dict], hp: BaFTHyperParams, rng: random.Random) -> List[_Row]:
    pool = unrelated_prompts(hp.locality_source)
    chosen = rng.sample(pool, min(hp.n_locality_prompts, len(pool)))
    # WISE's convention: the caller may pass its own unrelated prompt with each request.
    chosen += [r["loc_prompt"] for r in requests if r.get("loc_prompt")]
    for request in requests:
        chosen += subject_swapped_prompts(request["prompt"], request.get("subject"), hp.n_subject_swaps, rng)
    rows = []
    for text in chosen:
        ids = tok(text)["input_ids"][-hp.max_length :]
        if ids:
            rows.append(_Row(ids, len(ids), "unrelated"))
    return rows


def _input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def _gate_mean(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean gate vector per row over real tokens: (B, T, r), (B, T) -> (B, r)."""
    mask = mask.to(gates.dtype).unsqueeze(-1)
    return (gates * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _gate_peak(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Largest value per row over real tokens: (B, T, k), (B, T) -> (B, k); values are >= 0."""
    return (gates * mask.to(gates.dtype).unsqueeze(-1)).amax(1)


def _locality_penalty(module: plumbing.BaFTIntervention, states: torch.Tensor, mask: torch.Tensor,
                      rule: str) -> torch.Tensor:
    """How much the trainable bases touch unrelated prompts (states: the inputs there, (B, T, d)).

    Frozen bases (after grow) are left out: this edit cannot change what they do.
    """
    if rule == "gate_mean":
        return _gate_mean(module.gates(states, trainable_only=True), mask).mean()
    # 'change_peak': the relative change of the hidden state at each prompt's worst position.
    # A gate alone can look small while large coordinates behind it still move the state.
    relative = module.change(states, trainable_only=True).norm(dim=-1) / states.norm(dim=-1).clamp_min(1e-6)
    return _gate_peak(relative.unsqueeze(-1), mask).mean()


def _load_balance(module: plumbing.BaFTIntervention, edit_gates: torch.Tensor, edit_count: int) -> torch.Tensor:
    """Incremental term (pay for bases past edits use) plus a Switch-style term within a batch."""
    prior = module.basis_usage / max(edit_count, 1)
    loss = (prior.to(edit_gates.device) * edit_gates).sum(-1).mean()
    if edit_gates.shape[0] > 1:
        share = edit_gates / edit_gates.sum(-1, keepdim=True).clamp_min(1e-8)
        loss = loss + module.rank * (share.mean(0) ** 2).sum() - 1.0
    return loss


def _batch_mask(rows: List[_Row], kinds, device) -> torch.Tensor:
    return torch.tensor([r.kind in kinds for r in rows], device=device)


def train_edit(model, tok, requests: List[dict], hp: BaFTHyperParams, state: plumbing.BaFTState) -> EditReport:
    """Fit the interventions in `state` so that `requests` hold; edits before stay in place."""
    start = time.perf_counter()
    rng = random.Random(hp.seed + state.edit_count)
    new_rows = _edit_rows(tok, requests, hp, rng)
    replayed = rng.sample(state.replay_memory, min(hp.replay_edits, len(state.replay_memory)))
    rows = new_rows + [_Row(list(m["ids"]), m["n_prompt"], "replay") for m in replayed]
    unrelated_rows = _unrelated_rows(tok, requests, hp, rng)
    use_kl = hp.lambda_loc > 0 and hp.kl_weight > 0 and bool(unrelated_rows)
    if use_kl:  # the KL term needs the unrelated prompts' full forward pass; the gate term does not
        rows += unrelated_rows

    device = _input_device(model)
    pad_id = pad_id_of(tok)
    batch = pad_rows([r.ids for r in rows], [r.n_prompt for r in rows], pad_id).to(device)
    scored = _batch_mask(rows, ("edit", "context", "replay"), device)
    # Early stop waits for this call's edits, and for replayed ones only when asked: waiting for
    # replays ran late sequential edits to the step cap (20 ZsRE edits: 23 s vs 13 s per edit).
    must_hold = _batch_mask(rows, ("edit", "replay") if hp.early_stop_waits_for_replay else ("edit",), device)
    edit_main = [i for i, r in enumerate(rows) if r.kind == "edit"]

    # Next-token positions that train: targets of scored rows; every position of unrelated rows.
    shift_labels = batch.labels[:, 1:]
    target_pos = (shift_labels != -100) & scored[:, None]
    unrelated_pos = batch.attention_mask[:, 1:].bool() & _batch_mask(rows, ("unrelated",), device)[:, None]

    base_model, head = model.base_model, model.get_output_embeddings()
    indices = sorted(state.interventions)
    modules = [state.interventions[i] for i in indices]
    params = [p for m in modules for p in m.parameters()]

    def hidden_states():
        out = base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        return out.last_hidden_state[:, :-1]

    with torch.no_grad():
        cached = plumbing.capture_layer_input(model, indices[0], input_ids=batch.input_ids,
                                              attention_mask=batch.attention_mask)
        reference = F.log_softmax(head(hidden_states()[unrelated_pos]).float(), -1) if use_kl else None
        unrelated_states = None
        # With gate='ones' (ReFT) only the change penalty is meaningful; the gate mean is constant.
        if unrelated_rows and hp.lambda_loc > 0 and not (hp.gate == "ones" and hp.locality_penalty == "gate_mean"):
            loc = pad_rows([r.ids for r in unrelated_rows], [len(r.ids) for r in unrelated_rows], pad_id).to(device)
            # What each gate sees on unrelated prompts (exact for one layer; pre-edit below for several).
            unrelated_states = plumbing.capture_intervention_inputs(
                model, indices, input_ids=loc.input_ids, attention_mask=loc.attention_mask)
            loc_mask = loc.attention_mask

    optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    was_training = model.training
    model.eval()
    for m in modules:
        m.record_gates = True
    report = EditReport(0, 0.0, math.nan, math.nan, False)
    try:
        with plumbing.reuse_layer_input(model, indices[0], cached):
            for step in tqdm(range(hp.n_steps), desc="BaFT edit", leave=False, disable=None):
                with torch.enable_grad():
                    hidden = hidden_states()
                    target_logits = head(hidden[target_pos]).float()
                    target_ids = shift_labels[target_pos]
                    token_nll = F.cross_entropy(target_logits, target_ids, reduction="none")
                    # Mean per row first, so long targets do not outweigh short ones.
                    row_of = target_pos.nonzero()[:, 0]
                    row_nll = torch.zeros(len(rows), device=device).index_add(0, row_of, token_nll)
                    row_len = torch.zeros(len(rows), device=device).index_add(0, row_of, torch.ones_like(token_nll))
                    edit_loss = (row_nll[scored] / row_len[scored].clamp_min(1)).mean()
                    holds = bool((target_logits.argmax(-1) == target_ids)[must_hold[row_of]].all())
                    loss = edit_loss

                    if unrelated_states is not None:
                        terms = [_locality_penalty(m, unrelated_states[i].float(), loc_mask, hp.locality_penalty)
                                 for i, m in zip(indices, modules)]
                        unrelated_change = torch.stack(terms).mean()
                        loss = loss + hp.lambda_loc * unrelated_change
                    if reference is not None:
                        current = F.log_softmax(head(hidden[unrelated_pos]).float(), -1)
                        kl = F.kl_div(current, reference, log_target=True, reduction="batchmean")
                        loss = loss + hp.lambda_loc * hp.kl_weight * kl
                    if hp.lambda_lb > 0 and hp.gate == "learned":
                        lb = torch.stack([
                            _load_balance(m, _gate_mean(m.last_gates, batch.attention_mask)[edit_main], state.edit_count)
                            for m in modules]).mean()
                        loss = loss + hp.lambda_lb * lb

                    if not torch.isfinite(loss) or any(not torch.isfinite(m.last_gates).all() for m in modules):
                        raise NonFiniteError(
                            f"non-finite loss or gates at step {step} while editing "
                            f"{[r['prompt'] for r in requests]!r:.200}; lower lr (now {hp.lr}) or check the model's dtype")
                    unrelated = unrelated_change.item() if unrelated_states is not None else math.nan
                    report = EditReport(step, 0.0, loss.item(), edit_loss.item(), holds, unrelated)
                    edit_done = (hp.early_stop == "argmax" and holds) or (
                        hp.early_stop == "loss" and edit_loss.item() < hp.early_stop_loss)
                    local_enough = (hp.early_stop_locality is None or unrelated_states is None
                                    or unrelated <= hp.early_stop_locality)
                    if edit_done and local_enough:
                        break
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                report.steps = hp.n_steps
        # Record which bases this edit opens (gates of the last forward), for later edits' balancing.
        with torch.no_grad():
            for m in modules:
                opened = _gate_mean(m.last_gates.detach(), batch.attention_mask)[edit_main].sum(0)
                m.basis_usage += opened.to(m.basis_usage.device)
    finally:
        for m in modules:
            m.record_gates, m.last_gates = False, None
        model.train(was_training)

    for r in new_rows:
        if r.kind == "edit":
            state.replay_memory.append({"ids": tuple(r.ids), "n_prompt": r.n_prompt})
    report.seconds = time.perf_counter() - start
    return report


def build_interventions(model, hp: BaFTHyperParams) -> Dict[int, plumbing.BaFTIntervention]:
    """Fresh, identity-at-init interventions for hp.layers, seeded by hp.seed."""
    d, n_layers = plumbing.hidden_size(model), len(plumbing.decoder_layers(model))
    bad = [i for i in hp.layers if i >= n_layers]
    if bad:
        raise ValueError(f"layers={hp.layers}: {bad} out of range; this model has layers 0..{n_layers - 1}")
    if hp.rank > d:
        raise ValueError(f"rank={hp.rank} exceeds the model's hidden size {d}; use rank <= {d}")
    generator = torch.Generator().manual_seed(hp.seed)
    return {
        i: plumbing.BaFTIntervention(
            d, hp.rank, hp.gate_temperature, hp.gate_init_bias, hp.gate_init_std, hp.gate, generator,
            hp.gate_input_norm,
        )
        for i in hp.layers
    }
