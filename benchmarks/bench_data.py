"""Benchmark data sets: which file each name reads, and its first records as the host's edit requests
(mapped by easyedit_baft.records, built by the host's `_prepare_requests`)."""

import hashlib
import json
from pathlib import Path
from typing import Dict, List

from easyedit_baft.records import edit_kwargs, read_records

# Name on the command line -> file under the data dir.
DATA_FILES: Dict[str, str] = {
    "zsre": "zsre/zsre_mend_eval_portability_gpt4.json", "counterfact": "counterfact/counterfact-edit.json",
    "knowedit_zsre": "knowedit/ZsRE/ZsRE-test-all.json",
    "knowedit_wikicf": "knowedit/wiki_counterfact/train_cf.json",
    "knowedit_wikibio": "knowedit/WikiBio/wikibio-test-all.json",
    "knowedit_recent": "knowedit/wiki_recent/recent_test.json",
}
# Training-time unrelated prompts (WISE's loc_prompts): the ZsRE TRAIN split, disjoint from every eval set.
LOC_PROMPT_FILE = "zsre/zsre_mend_train-1k.json"


def data_file(data_dir: Path, name: str) -> Path:
    if name not in DATA_FILES:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(DATA_FILES)}")
    path = data_dir / DATA_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"data set {name!r}: {path} does not exist (the sets are not shipped: put "
                                f"{DATA_FILES[name]} under ../shared/data, easyedit_baft/data/PROVENANCE.md names its "
                                "source), or pass --data-dir pointing at the folder that holds it")
    return path


def data_hash(data_dir: Path, name: str) -> str:
    """sha256 of the data set's file (first 16 hex digits, as PROVENANCE.md writes them)."""
    return hashlib.sha256(data_file(data_dir, name).read_bytes()).hexdigest()[:16]


def build_requests(prepare_requests, data_dir: Path, name: str, n: int) -> List[dict]:
    records = read_records(data_file(data_dir, name))
    if n > len(records):
        raise ValueError(f"--n {n} exceeds the {len(records)} records of {name!r}; use --n <= {len(records)}")
    return requests_from_records(prepare_requests, records[:n])


def requests_from_records(prepare_requests, records: List[dict]) -> List[dict]:
    kwargs = edit_kwargs(records)
    prompts, target_new = kwargs.pop("prompts"), kwargs.pop("target_new")
    # The host's edit() gives records without a ground truth (WikiBio, insertions) None; so does this.
    ground_truth = kwargs.pop("ground_truth", [None] * len(prompts))
    return prepare_requests(prompts, target_new, ground_truth, **kwargs)


def training_loc_prompts(data_dir: Path, n: int) -> List[str]:
    """Unrelated prompts for methods that take them at training time (WISE), from the train split."""
    return [r["loc"] + " " + r["loc_ans"] for r in json.loads((data_dir / LOC_PROMPT_FILE).read_text("utf-8"))[:n]]
