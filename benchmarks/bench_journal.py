"""Per-record journal of a single-edit run, so a run cut off part-way resumes where it stopped.

Single edits are independent (each is undone before the next), so the records already scored stay
valid as long as the method, data and hparams are the same; the journal's first line says which.
One JSON line is appended per finished record, so a cut-off run loses at most the record in flight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional


def _read_lines(path: Path) -> List[dict]:
    """The journal's JSON lines; a last line cut off mid-write (the record in flight) is dropped.
    A bad line before the last is not a cut-off write: it raises."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1:
                raise ValueError(f"{path}: line {number + 1} is not JSON; delete the journal to start over") from None
    return parsed


def journal_path(result_file: Path) -> Path:
    return result_file.with_name(result_file.stem + ".partial.jsonl")


class Journal:
    """Finished records by index; with path None it is kept in memory only."""

    def __init__(self, path: Optional[Path], header: dict):
        self.path = path
        self.header = header
        self.entries: Dict[int, dict] = {}
        self.discarded_reason = None
        if path is not None and path.is_file():
            lines = _read_lines(path)
            if lines and lines[0] == header:
                self.entries = {entry["index"]: entry for entry in lines[1:]}
                # Rewritten whole, so the next record does not follow a cut-off line.
                path.write_text("".join(json.dumps(line, default=float) + "\n" for line in lines))
            else:
                # A journal of other hparams or data would mix two different runs into one score.
                self.discarded_reason = "its method, data or hparams differ from this run's"
                path.unlink()

    def record(self, index: int, entry: dict) -> None:
        entry = {"index": index, **entry}
        self.entries[index] = entry
        if self.path is None:
            return
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.header) + "\n")
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry, default=float) + "\n")

    def done(self) -> None:
        """The full result is written: the journal has served its purpose."""
        if self.path is not None and self.path.is_file():
            self.path.unlink()


def read_partial(path: Path) -> tuple:
    """(header, entries) of a journal on disk, for the report."""
    lines = _read_lines(path)
    return (lines[0], lines[1:]) if lines else ({}, [])


def ordered(entries: Dict[int, dict]) -> List[dict]:
    return [entries[i] for i in sorted(entries)]
