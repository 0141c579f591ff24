"""What a run is (its RunSpec) and the key that finds its finished result.

Every skip, resume and redo decision is one question: does a finished result exist under this run's
key? The key hashes everything that makes a result: method, data set, scenario, n, the hparams as the
run resolves them, the data file's hash, the model's fingerprint and how the run is scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

# Files of a model folder larger than this are fingerprinted by their size and their first and
# last SAMPLE_BYTES: hashing a 13 GB checkpoint on every start would cost minutes.
SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class RunSpec:
    method: str
    data_set: str
    scenario: str
    n: int
    hparams: dict  # as the run resolves them (bench_worker.hparams_record)
    data_sha256: str
    model_fingerprint: str
    protocol: dict  # how it is scored: fluency_n, and a sequence's checkpoints

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), sort_keys=True, default=str))

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict:
        """What a result stores of its spec (its hparams are stored beside, as 'hparams')."""
        spec = self.as_dict()
        spec.pop("hparams")
        return {"run_key": self.key, "run_spec": spec}


def model_fingerprint(model_dir) -> str:
    """A hash of a local model folder's files (names, sizes and contents, large ones sampled)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(model_dir)}:{size}\n".encode())
        with path.open("rb") as handle:
            if size <= 2 * SAMPLE_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(size - SAMPLE_BYTES)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def finished_result(path: Path, spec: Optional[RunSpec]) -> Optional[str]:
    """Why the result at `path` is this spec's finished result, or None when the run must be (re)done."""
    saved = json.loads(path.read_text()) if spec is not None and path.is_file() else {}
    # A result written before runs had keys is redone: it also lacks the generation-based scores.
    finished = saved.get("status") == "ok" and saved.get("run_key") == spec.key
    return "finished under the same run key" if finished else None


def changed_fields(path: Path, spec: RunSpec) -> list:
    """What differs between a saved result and this spec, for the 'redone' message."""
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    recorded = dict(saved.get("hparams") or {}, **(saved.get("run_spec") or {}))
    current = dict(spec.hparams, **{k: v for k, v in spec.as_dict().items() if k != "hparams"})
    return [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in current.items()
            if k in recorded and recorded[k] != v] or ["no run key" if "run_key" not in saved else "run key"]
