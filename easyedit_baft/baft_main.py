"""apply_baft_to_model: BaFT behind EasyEdit's method interface."""

from __future__ import annotations

import copy as copy_module
import logging
import time
from typing import Any, List, Optional, Tuple

import torch

from . import layers as plumbing
from .hparams import BaFTHyperParams
from .requests import validate_requests
from .trainer import build_interventions, fit_gate_centers, train_edit

LOG = logging.getLogger(__name__)

# Fields that fix the shape of the interventions: later edits on the same model must agree.
STRUCTURAL_FIELDS = ("layers", "rank", "gate", "gate_center")


class RestoreEdit:
    """Undoes one apply_baft_to_model call exactly; EasyEdit calls it after a non-sequential edit."""

    def __init__(self, model, snapshot: Optional[dict]):
        self.model, self.snapshot = model, snapshot

    def __call__(self) -> None:
        state = plumbing.get_state(self.model)
        if self.snapshot is None or state is None:
            plumbing.detach(self.model)  # the model had no edits before: remove every hook
        else:
            state.restore(self.snapshot)


def block_rank(field: str, hparams: BaFTHyperParams, n_requests: int, hidden_size: int) -> int:
    """Bases one call trains: hparams.<field> (rank or grow_rank), times the requests with rank_per_request."""
    per_request = getattr(hparams, field)
    if not hparams.rank_per_request or n_requests == 1 or per_request > hidden_size:
        return per_request  # its size alone is checked where the bases are made
    bases = per_request * n_requests
    if bases > hidden_size:
        raise ValueError(
            f"rank_per_request: {n_requests} requests x {field}={per_request} = {bases} bases, more than the hidden "
            f"size {hidden_size}; pass at most {hidden_size // per_request} requests per call, lower {field}, "
            "or set rank_per_request: false")
    return bases


def _grow(state: plumbing.BaFTState, hparams: BaFTHyperParams, rank: int) -> None:
    """Freeze the bases earlier edits trained and give this edit `rank` fresh ones."""
    generator = torch.Generator().manual_seed(hparams.seed + state.edit_count)
    for _, module in sorted(state.interventions.items()):
        module.grow(rank, generator)


def _check_compatible(state: plumbing.BaFTState, hparams: BaFTHyperParams) -> None:
    for name in STRUCTURAL_FIELDS:
        # Edits saved before a field existed were made with its default.
        before = state.hparams.get(name, BaFTHyperParams.__dataclass_fields__[name].default)
        now = getattr(hparams, name)
        if before != now:
            raise ValueError(
                f"{name}={now!r}, but this model already carries BaFT edits made with {name}={before!r}; "
                f"use {name}={before!r} to add edits, or remove the existing edits first"
            )


def apply_baft_to_model(
    model,
    tok,
    requests: List[dict],
    hparams: BaFTHyperParams,
    copy: bool = False,
    return_orig_weights: bool = False,
    keep_original_weight: bool = False,
    **kwargs: Any,
) -> Tuple[Any, Any]:
    """Edit `model` so that each request's prompt is followed by its target_new.

    Edits accumulate: calling again on the same model adds to the same interventions.
    Returns (edited_model, weights_copy); weights_copy is a callable that undoes this call
    (EasyEdit restores BaFT by calling it), or {} when return_orig_weights is False.
    If anything fails, the model is left exactly as it was before the call.
    """
    if not isinstance(hparams, BaFTHyperParams):
        raise TypeError(
            f"hparams is a {type(hparams).__name__}; pass BaFTHyperParams "
            "(e.g. BaFTHyperParams.from_hparams('hparams/BaFT/llama-7b.yaml'))"
        )
    requests = validate_requests(requests)
    plumbing.decoder_layers(model)  # an unsupported architecture fails here, before any change
    if copy:
        model = copy_module.deepcopy(model)

    state = plumbing.get_state(model)
    snapshot = None
    hidden_size = plumbing.hidden_size(model)
    if state is None:
        interventions = build_interventions(model, hparams, block_rank("rank", hparams, len(requests), hidden_size))
        if hparams.gate_center:
            fit_gate_centers(model, tok, interventions, hparams)
        state = plumbing.attach(model, interventions, hparams.to_dict())
    else:
        _check_compatible(state, hparams)
        snapshot = state.snapshot()
    undo = RestoreEdit(model, snapshot)
    # Training reads the interventions directly, before any hook could move them.
    plumbing.place_on_layers(model, state)

    try:
        if hparams.grow_rank and state.edit_count > 0:
            _grow(state, hparams, block_rank("grow_rank", hparams, len(requests), hidden_size))
        report = train_edit(model, tok, requests, hparams, state)
        # Bookkeeping stays inside the try: an interrupt here must not leave a half-recorded edit.
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        state.edit_log.extend(
            {"prompt": request["prompt"], "target_new": request["target_new"],
             "subject": request.get("subject"), "time": stamp}
            for request in requests
        )
        state.edit_count += len(requests)
        state.last_report = report
    except BaseException:
        undo()  # an exception, a KeyboardInterrupt or a non-finite loss: leave no trace
        raise

    LOG.info("BaFT: %d request(s) in %d steps, %.2fs, edit loss %.4f, holds=%s, unrelated change %.4f%s",
             len(requests), report.steps, report.seconds, report.edit_loss, report.holds, report.unrelated_change,
             f", {report.screened_in} screened in" if hparams.screen_negatives else "")
    return model, (undo if return_orig_weights else {})
