"""Saved progress of a sequential run, so a run cut off part-way resumes from its last edit.

A sequence cannot be journalled record by record like single edits: edit k is made on the model as
the k-1 edits before it left it. So after every edit the model's edited state is saved with the
run's bookkeeping, and a resumed run restores both on a fresh model before making edit k+1.

What "the edited state" is depends on the method (MODEL_STATES): BaFT's saved interventions, the
weight tensors an in-place editor (ROME, MEMIT, FT) changed so far, or GRACE's codebook. ROME and
MEMIT also sample context templates once, from the model as it is at their first edit; those are
saved too, so a resumed run uses the same ones. WISE, LoRA and AlphaEdit keep state in host objects
this does not reach (side memories, PEFT wrappers, a projection cache): their sequences start over.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

from bench_methods import grace_adapters

# Host modules whose CONTEXT_TEMPLATES_CACHE steers later edits (sampled once, then reused).
CONTEXT_TEMPLATE_MODULES = {
    "ROME": "easyeditor.models.rome.rome_main",
    "MEMIT": "easyeditor.models.memit.memit_main",
}


def _save_baft(model, directory: Path, changed_names) -> None:
    from easyedit_baft.artifacts import save_edits

    save_edits(model, directory)


def _restore_baft(model, directory: Path, hparams) -> None:
    from easyedit_baft.artifacts import load_edits

    load_edits(model, directory)


def _save_weights(model, directory: Path, changed_names) -> None:
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: params[name].detach().contiguous() for name in sorted(changed_names)},
              str(directory / "weights.safetensors"))


def _restore_weights(model, directory: Path, hparams) -> None:
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    saved = load_file(str(directory / "weights.safetensors"))
    missing = sorted(set(saved) - set(params))
    if missing:
        raise ValueError(f"checkpoint {directory} holds weights the model lacks: {missing[:3]}; delete it to start over")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


# What a GRACE adapter learns and later edits and scoring read; the rest is rebuilt from hparams.
GRACE_CODEBOOK_FIELDS = ("keys", "values", "epsilons", "key_labels", "edit_ids", "key_id", "edit_label",
                         "edit_id", "chosen_key", "iter")


def _grace_adapter(model):
    adapters = grace_adapters(model)
    if len(adapters) != 1:
        raise ValueError(f"expected one GRACE adapter in the model, found {len(adapters)}")
    return adapters[0]


def _save_grace(model, directory: Path, changed_names) -> None:
    adapter = _grace_adapter(model)
    codebook = {name: getattr(adapter, name) for name in GRACE_CODEBOOK_FIELDS if hasattr(adapter, name)}
    codebook = {name: value.detach() if isinstance(value, torch.Tensor) else value for name, value in codebook.items()}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(codebook, directory / "codebook.pt")


def _restore_grace(model, directory: Path, hparams) -> None:
    from easyeditor.models.grace.GRACE import GRACE

    GRACE(config=hparams, model=model, device=hparams.device)  # puts the (empty) adapter in its layer
    adapter = _grace_adapter(model)
    for name, value in torch.load(directory / "codebook.pt").items():
        # values is trained at every edit: the host keeps it as a Parameter.
        setattr(adapter, name, torch.nn.Parameter(value, requires_grad=True) if name == "values" else value)


# alg_name -> (save, restore) of the model's edited state.
MODEL_STATES = {
    "BaFT": (_save_baft, _restore_baft),
    "ROME": (_save_weights, _restore_weights),
    "MEMIT": (_save_weights, _restore_weights),
    "FT": (_save_weights, _restore_weights),
    "GRACE": (_save_grace, _restore_grace),
}


def restore_state(alg_name: str, model, directory: Path, hparams) -> None:
    """Put a saved edited state (a checkpoint's, or a finished run's final_state_dir) onto a fresh model."""
    MODEL_STATES[alg_name][1](model, directory, hparams)


def resumable(alg_name: str) -> bool:
    return alg_name in MODEL_STATES


def _template_cache(alg_name: str):
    # The host module is loaded once the method has edited; if it is not, there is nothing to keep.
    module = sys.modules.get(CONTEXT_TEMPLATE_MODULES.get(alg_name, ""))
    return getattr(module, "CONTEXT_TEMPLATES_CACHE", None)


def _set_template_cache(alg_name: str, templates) -> None:
    module = CONTEXT_TEMPLATE_MODULES.get(alg_name)
    if module and templates is not None:
        setattr(importlib.import_module(module), "CONTEXT_TEMPLATES_CACHE", templates)


class SequenceCheckpoint:
    """Progress of one sequential run in `directory`; with directory None nothing is saved.

    progress.json names the state folder it goes with and is replaced only after that folder is
    complete, so a run cut off while saving still finds the previous, whole checkpoint.
    """

    def __init__(self, directory: Optional[Path], header: dict, alg_name: str):
        self.directory, self.header, self.alg_name = directory, header, alg_name
        self.discarded_reason = None
        self.progress: Optional[dict] = None
        progress = read_progress(directory) if directory is not None else None
        if progress is None:
            return
        if progress.get("header") != header:
            # Progress of other hparams or data would mix two different runs into one score.
            self.discarded_reason = "its method, data or hparams differ from this run's"
            shutil.rmtree(directory)
            return
        self.progress = progress

    @property
    def enabled(self) -> bool:
        return self.directory is not None and resumable(self.alg_name)

    def restore(self, model, hparams) -> Optional[dict]:
        """Put the saved edited state onto a fresh `model`; returns the saved bookkeeping (None: start afresh)."""
        if self.progress is None or not self.enabled:
            return None
        restore_state(self.alg_name, model, self.directory / self.progress["state"], hparams)
        _set_template_cache(self.alg_name, self.progress.get("context_templates"))
        return self.progress["bookkeeping"]

    def save(self, model, bookkeeping: dict, changed_names, new_state: bool = True) -> None:
        """Save after an edit (new_state) or after scoring (only the bookkeeping changed)."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        state = f"state-{bookkeeping['n_edits']}"
        if new_state:
            staging = self.directory / (state + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            MODEL_STATES[self.alg_name][0](model, staging, changed_names)
            shutil.rmtree(self.directory / state, ignore_errors=True)
            staging.rename(self.directory / state)
        progress = {"header": self.header, "state": state, "bookkeeping": bookkeeping,
                    "context_templates": _template_cache(self.alg_name)}
        staged = self.directory / "progress.tmp"
        staged.write_text(json.dumps(progress, default=float))
        staged.replace(self.directory / "progress.json")
        self.progress = progress
        for old in self.directory.glob("state-*"):
            if old.name != state:
                shutil.rmtree(old)

    def done(self) -> None:
        """The full result is written: the final edited state is kept beside it (final_state_dir), for
        re-scoring without editing again; the rest of the checkpoint has served its purpose."""
        if self.directory is None or not self.directory.is_dir():
            return
        if self.progress is not None and (self.directory / self.progress["state"]).is_dir():
            final = final_state_dir(self.directory)
            shutil.rmtree(final, ignore_errors=True)
            (self.directory / self.progress["state"]).rename(final)
        shutil.rmtree(self.directory)


def read_progress(directory: Path) -> Optional[dict]:
    """A checkpoint's progress.json (header, bookkeeping), for the report; None if there is none."""
    path = directory / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoint_dir(result_file: Path) -> Path:
    return result_file.with_name(result_file.stem + ".partial")


def final_state_dir(checkpoint: Path) -> Path:
    """Where a finished sequence's edited state stays (beside its result, not committed)."""
    return checkpoint.with_suffix(".state")


def as_bookkeeping(result, meter) -> Dict[str, object]:
    """What a resumed run needs besides the model: the run's results so far and the cost meter."""
    return {"n_edits": result.n_edits, "edit_seconds": list(result.edit_seconds),
            "checkpoints": list(result.checkpoints), "per_edit_params": list(meter.per_edit_params),
            "changed_names": sorted(meter.changed_names), "seconds": result.seconds}
