"""Saved progress, so a run cut off part-way resumes where it stopped: a single-edit run's journal (a JSON
line per finished record), or a sequence's edited state (its adapter's to save) and bookkeeping, after every call."""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from bench_methods import MethodSpec

# Progress of another configuration is discarded: it would mix two different runs into one score.
OTHER_RUN = "its method, data or hparams differ from this run's"


def _json_default(value):
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else str(value)


def plain(data):
    """As it reads back from JSON (numpy numbers as numbers, anything else unknown as its text)."""
    return json.loads(json.dumps(data, default=_json_default))


def write_json(path: Path, data, indent: Optional[int] = 1) -> None:
    """Write beside the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(data, indent=indent, default=_json_default))
    staging.replace(path)


def result_path(results_dir: Path, n: int, method: str, data_set: str, scenario: str) -> Path:
    return results_dir / "runs" / f"n{n}" / data_set / scenario / f"{method}.json"


def journal_path(result_file: Path) -> Path:
    return result_file.with_name(result_file.stem + ".partial.jsonl")


def checkpoint_dir(result_file: Path) -> Path:
    return result_file.with_name(result_file.stem + ".partial")


def final_state_dir(checkpoint: Path) -> Path:
    """Where a finished sequence's edited state stays (beside its result, not committed)."""
    return checkpoint.with_suffix(".state")


def read_journal(path: Path) -> List[dict]:
    """The journal's lines, header first; a last line cut off mid-write (the record in flight) is dropped,
    a bad line before it is no cut-off write and raises."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1:
                raise ValueError(f"{path}: line {number + 1} is not JSON; delete the journal to start over") from None
    return parsed


def read_progress(directory: Path) -> Optional[dict]:
    path = directory / "progress.json"  # header, state folder, bookkeeping
    return json.loads(path.read_text()) if path.is_file() else None


class Journal:
    """A single-edit run's finished records by index; with path None it is kept in memory only."""

    def __init__(self, path: Optional[Path], header: dict):
        self.path, self.header = path, header
        lines = read_journal(path) if path is not None and path.is_file() else []
        self.discarded_reason = OTHER_RUN if lines and lines[0] != header else None
        kept = [] if self.discarded_reason else lines[1:]
        self.entries: Dict[int, dict] = {entry["index"]: entry for entry in kept}
        if path is not None:  # rewritten whole: the next record must not follow a line cut off mid-write
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(line, default=float) + "\n" for line in [header, *kept]))

    def record(self, index: int, entry: dict) -> None:
        entry = {"index": index, **entry}
        self.entries[index] = entry
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry, default=float) + "\n")

    def done(self) -> None:
        """The full result is written: the journal has served its purpose."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class SequenceCheckpoint:
    """Progress of one sequential run in `directory` (None: nothing is saved); progress.json names its state
    folder and is replaced only once that is complete: a run cut off while saving finds the previous one."""

    def __init__(self, directory: Optional[Path], header: dict, spec: MethodSpec):
        self.directory, self.header, self.spec = directory, header, spec
        self.discarded_reason = None
        self.progress = read_progress(directory) if directory is not None else None
        if self.progress is not None and self.progress.get("header") != header:
            self.discarded_reason, self.progress = OTHER_RUN, None
            shutil.rmtree(directory)

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.spec.adapter.save is not None

    def restore(self, model, hparams) -> Optional[dict]:
        """Put the saved edited state onto a fresh `model`; returns the saved bookkeeping (None: start afresh)."""
        if self.progress is None or not self.enabled:
            return None
        self.spec.adapter.restore(model, self.directory / self.progress["state"], hparams)
        self.spec.adapter.set_context_templates(self.progress.get("context_templates"))
        return self.progress["bookkeeping"]

    def save(self, model, bookkeeping: dict, changed_names, new_state: bool = True) -> None:
        """Save after an edit (new_state) or after scoring (only the bookkeeping changed)."""
        if not self.enabled:
            return
        state = f"state-{bookkeeping['n_edits']}"
        if new_state:
            staging = self.directory / (state + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            self.spec.adapter.save(model, staging, changed_names)
            shutil.rmtree(self.directory / state, ignore_errors=True)
            staging.rename(self.directory / state)
        progress = {"header": self.header, "state": state, "bookkeeping": bookkeeping,
                    "context_templates": self.spec.adapter.context_templates()}
        write_json(self.directory / "progress.json", progress, indent=None)
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
