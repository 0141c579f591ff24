"""Benchmark data sets, mapped onto EasyEdit's edit requests the way its example scripts map them.

Each loader returns the keyword arguments of the host's `_prepare_requests`, so the requests
themselves are built by EasyEdit. Only prompt, target_new and subject feed an edit; rephrase,
locality and portability are evaluation fields and never reach training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

# Name on the command line -> (file under the data dir, loader).
DATA_FILES: Dict[str, str] = {
    "zsre": "zsre/zsre_mend_eval_portability_gpt4.json",
    "counterfact": "counterfact/counterfact-edit.json",
    "knowedit_zsre": "knowedit/ZsRE/ZsRE-test-all.json",
    "knowedit_wikicf": "knowedit/wiki_counterfact/train_cf.json",
}
# Training-time unrelated prompts (WISE's loc_prompts): the ZsRE TRAIN split, disjoint from every eval set.
LOC_PROMPT_FILE = "zsre/zsre_mend_train-1k.json"


def default_data_dir() -> Path:
    """../shared/data relative to the repository root (this file lives in <root>/benchmarks)."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _read_records(data_dir: Path, name: str, n: int) -> List[dict]:
    path = data_dir / DATA_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"data set {name!r}: {path} does not exist; the benchmark sets are not shipped with the package: "
            f"put {DATA_FILES[name]} under ../shared/data beside the repository (the default; "
            f"easyedit_baft/data/PROVENANCE.md names its source), or pass --data-dir pointing at the folder that holds it"
        )
    records = json.loads(path.read_text(encoding="utf-8"))
    if n > len(records):
        raise ValueError(f"--n {n} exceeds the {len(records)} records of {name!r}; use --n <= {len(records)}")
    return records[:n]


def _first_text(answer) -> str:
    """KnowEdit nests answers in lists; EasyEdit's KnowEdit script takes the first."""
    while isinstance(answer, list):
        answer = answer[0] if answer else ""
    return str(answer)


def _knowedit_pairs(entries) -> Optional[tuple]:
    """A KnowEdit list of {prompt, ground_truth} -> (prompts, answers), dropping empty answers."""
    if not entries:
        return None
    prompts, answers = [], []
    for entry in entries:
        answer = _first_text(entry["ground_truth"])
        if answer.strip():
            prompts.append(entry["prompt"])
            answers.append(answer)
    return (prompts, answers) if prompts else None


def _columns(records: List[dict], field_of: Callable[[dict], Optional[tuple]]) -> dict:
    """Per-record (prompt, answer) pairs -> EasyEdit's {'prompt': [...], 'ground_truth': [...]}."""
    pairs = [field_of(r) for r in records]
    return {
        "prompt": [p[0] if p else None for p in pairs],
        "ground_truth": [p[1] if p else None for p in pairs],
    }


def _zsre(records: List[dict]) -> dict:
    return dict(
        prompts=[r["src"] for r in records],
        target_new=[r["alt"] for r in records],
        ground_truth=[_first_text(r["answers"]) for r in records],
        rephrase_prompts=[r["rephrase"] for r in records],
        subject=[r["subject"] for r in records],
        locality_inputs={"neighborhood": _columns(records, lambda r: (r["loc"], r["loc_ans"]))},
        portability_inputs={
            "one_hop": _columns(
                records, lambda r: (r["portability"]["New Question"], r["portability"]["New Answer"])
            )
        },
    )


def _counterfact(records: List[dict]) -> dict:
    return dict(
        prompts=[r["prompt"] for r in records],
        target_new=[r["target_new"] for r in records],
        ground_truth=[r["ground_truth"] for r in records],
        rephrase_prompts=[r["rephrase_prompt"] for r in records],
        subject=[r["subject"] for r in records],
        locality_inputs={
            "neighborhood": _columns(records, lambda r: (r["locality_prompt"], r["locality_ground_truth"]))
        },
        portability_inputs=None,
    )


def _knowedit(records: List[dict]) -> dict:
    locality_keys = sorted({k for r in records for k in (r.get("locality") or {})})
    portability_keys = sorted({k for r in records for k in (r.get("portability") or {})})
    kwargs = dict(
        prompts=[r["prompt"] for r in records],
        target_new=[r["target_new"] for r in records],
        ground_truth=[_first_text(r["ground_truth"]) for r in records],
        subject=[r["subject"] for r in records],
        locality_inputs={
            key: _columns(records, lambda r, key=key: _knowedit_pairs((r.get("locality") or {}).get(key)))
            for key in locality_keys
        },
        portability_inputs={
            key: _columns(records, lambda r, key=key: _knowedit_pairs((r.get("portability") or {}).get(key)))
            for key in portability_keys
        } or None,
    )
    # WikiData_counterfact's train split has no rephrase field: generalization is then not measured.
    if all("rephrase_prompt" in r for r in records):
        kwargs["rephrase_prompts"] = [r["rephrase_prompt"] for r in records]
    return kwargs


LOADERS: Dict[str, Callable[[List[dict]], dict]] = {
    "zsre": _zsre,
    "counterfact": _counterfact,
    "knowedit_zsre": _knowedit,
    "knowedit_wikicf": _knowedit,
}


def build_requests(prepare_requests, data_dir: Path, name: str, n: int) -> List[dict]:
    """The first n records of data set `name` as EasyEdit requests (built by the host's own builder)."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(LOADERS)}")
    kwargs = LOADERS[name](_read_records(data_dir, name, n))
    prompts, target_new, ground_truth = kwargs.pop("prompts"), kwargs.pop("target_new"), kwargs.pop("ground_truth")
    return prepare_requests(prompts, target_new, ground_truth, **kwargs)


def training_loc_prompts(data_dir: Path, n: int) -> List[str]:
    """Unrelated prompts for methods that take them at training time (WISE), from the train split."""
    path = data_dir / LOC_PROMPT_FILE
    records = json.loads(path.read_text(encoding="utf-8"))[:n]
    return [r["loc"] + " " + r["loc_ans"] for r in records]
