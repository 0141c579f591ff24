"""What a run is (its RunSpec) and the key that finds its finished result: the key hashes all that makes
a result (method, data set, scenario, n, the hparams as resolved, the data file's hash, the model's
fingerprint, the scoring), so every skip, resume and redo decision is one question: is it finished under it?
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

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
            if size > 2 * SAMPLE_BYTES:  # its first SAMPLE_BYTES, then from its last ones
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(size - SAMPLE_BYTES)
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def finished_result(saved: dict, spec: RunSpec) -> bool:
    """Whether a saved result is this spec's, finished (one from before run keys is redone: it also lacks em)."""
    return saved.get("status") == "ok" and saved.get("run_key") == spec.key


def changed_fields(saved: dict, spec: RunSpec) -> list:
    """What differs between a saved result and this spec, for the 'redone' message."""
    recorded = {**(saved.get("hparams") or {}), **(saved.get("run_spec") or {})}
    current = {**spec.hparams, **spec.record()["run_spec"]}
    return [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in current.items()
            if k in recorded and recorded[k] != v] or ["no run key" if "run_key" not in saved else "run key"]
