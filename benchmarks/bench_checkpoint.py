"""Saved progress of a sequential run, so a run cut off part-way resumes from its last edit.

A sequence cannot be journalled record by record like single edits: edit k is made on the model as
the k-1 edits before it left it. So after every edit the model's edited state is saved with the
run's bookkeeping, and a resumed run restores both on a fresh model before making edit k+1.

What "the edited state" is, is the method adapter's to say (bench_methods.ADAPTERS): BaFT's saved
interventions, the weight tensors an in-place editor (ROME, MEMIT, FT) changed so far, or GRACE's
codebook. ROME and MEMIT also sample context templates once, from the model as it is at their first
edit; those are saved too, so a resumed run uses the same ones. Methods whose adapter has no save
keep state in host objects this does not reach: their sequences start over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional

from bench_methods import MethodSpec

def restore_state(spec: MethodSpec, model, directory: Path, hparams) -> None:
    """Put a saved edited state (a checkpoint's, or a finished run's final_state_dir) onto a fresh model."""
    spec.adapter.restore(model, directory, hparams)


class SequenceCheckpoint:
    """Progress of one sequential run in `directory`; with directory None nothing is saved.

    progress.json names the state folder it goes with and is replaced only after that folder is
    complete, so a run cut off while saving still finds the previous, whole checkpoint.
    """

    def __init__(self, directory: Optional[Path], header: dict, spec: MethodSpec):
        self.directory, self.header, self.spec = directory, header, spec
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
        return self.directory is not None and self.spec.adapter.resumable

    def restore(self, model, hparams) -> Optional[dict]:
        """Put the saved edited state onto a fresh `model`; returns the saved bookkeeping (None: start afresh)."""
        if self.progress is None or not self.enabled:
            return None
        restore_state(self.spec, model, self.directory / self.progress["state"], hparams)
        self.spec.adapter.set_context_templates(self.progress.get("context_templates"))
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
            self.spec.adapter.save(model, staging, changed_names)
            shutil.rmtree(self.directory / state, ignore_errors=True)
            staging.rename(self.directory / state)
        progress = {"header": self.header, "state": state, "bookkeeping": bookkeeping,
                    "context_templates": self.spec.adapter.context_templates()}
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
