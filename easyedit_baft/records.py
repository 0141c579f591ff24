"""Benchmark records (ZsRE, CounterFact, KnowEdit) as edit cases, and where the data lives.

An edit case carries the request BaFT trains on (prompt, target_new, subject) and the fields
only evaluation may read (rephrase, locality, portability): training never sees the latter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

DATA_ENV = "EASYEDIT_BAFT_DATA"
PACKAGE_DIR = Path(__file__).resolve().parent
# Real ZsRE eval facts shipped for the demo (easyedit_baft/data/PROVENANCE.md says where from).
DEMO_FACTS = PACKAGE_DIR / "data" / "zsre_demo_facts.json"
DEFAULT_CONFIG_NAME = "smollm2-135m.yaml"


def default_data_dir() -> Path:
    """Where the full benchmark sets live: $EASYEDIT_BAFT_DATA, else ../shared/data beside the checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return PACKAGE_DIR.parent.parent / "shared" / "data"


def shipped_config(name: str = DEFAULT_CONFIG_NAME) -> Path:
    """hparams/BaFT/NAME: in an installed wheel it lies in easyedit_baft/configs (see setup.py)."""
    installed = PACKAGE_DIR / "configs" / name
    return installed if installed.is_file() else PACKAGE_DIR.parent / "hparams" / "BaFT" / name


def _first(value):
    """KnowEdit keeps some answers and prompts as lists; EasyEdit uses the first."""
    return value[0] if isinstance(value, list) and value else value


def _from_zsre(r: dict) -> dict:
    portability = r.get("portability") or {}
    return {
        "prompt": r["src"], "target_new": r["alt"], "subject": r.get("subject"),
        "ground_truth": _first(r.get("answers")) or r.get("pred"),
        "rephrase_prompt": r.get("rephrase"),
        "locality_prompt": r.get("loc"), "locality_ground_truth": r.get("loc_ans"),
        "portability_prompt": portability.get("New Question"),
        "portability_ground_truth": portability.get("New Answer"),
    }


def _from_counterfact(r: dict) -> dict:
    return {
        "prompt": r["prompt"], "target_new": r["target_new"], "subject": r.get("subject"),
        "ground_truth": r.get("ground_truth"), "rephrase_prompt": r.get("rephrase_prompt"),
        "locality_prompt": r.get("locality_prompt"), "locality_ground_truth": r.get("locality_ground_truth"),
        "portability_prompt": None, "portability_ground_truth": None,
    }


def _from_knowedit(r: dict) -> dict:
    def first_of(group: Optional[dict]):
        for items in (group or {}).values():
            item = _first(items)
            if isinstance(item, dict) and item.get("prompt"):
                return _first(item["prompt"]), _first(item.get("ground_truth"))
        return None, None

    loc_prompt, loc_answer = first_of(r.get("locality"))
    port_prompt, port_answer = first_of(r.get("portability"))
    return {
        "prompt": r["prompt"], "target_new": r["target_new"], "subject": r.get("subject"),
        "ground_truth": _first(r.get("ground_truth")), "rephrase_prompt": r.get("rephrase_prompt"),
        "locality_prompt": loc_prompt, "locality_ground_truth": loc_answer,
        "portability_prompt": port_prompt, "portability_ground_truth": port_answer,
    }


def record_format(record: dict) -> str:
    """'zsre', 'knowedit', 'counterfact' or 'requests', told apart by their keys."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    if "src" in record and "alt" in record:
        return "zsre"
    if "locality" in record or "portability" in record:
        return "knowedit"
    if "locality_prompt" in record or "case_id" in record:
        return "counterfact"
    if "prompt" in record and "target_new" in record:
        return "requests"
    raise ValueError(
        f"record with keys {sorted(record)} is in no known format; expected ZsRE (src, alt), "
        "CounterFact (prompt, target_new, locality_prompt), KnowEdit (prompt, target_new, locality) "
        "or plain requests (prompt, target_new)"
    )


_CONVERTERS = {"zsre": _from_zsre, "counterfact": _from_counterfact, "knowedit": _from_knowedit,
               "requests": _from_counterfact}


def read_records(path, n: Optional[int] = None) -> List[dict]:
    """The first n raw records of a JSON list file (checked: exists, parses, non-empty list)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; pass an existing JSON file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"data file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(records, list) or not records:
        raise ValueError(f"data file {str(path)!r} must hold a non-empty JSON list of records")
    if n is not None:
        if n < 1:
            raise ValueError(f"n={n}: ask for at least one record")
        records = records[:n]
    return records


def load_edit_cases(path, n: Optional[int] = None) -> List[dict]:
    """The first n records of a ZsRE, CounterFact, KnowEdit or plain-requests JSON file."""
    records = read_records(path, n)
    convert = _CONVERTERS[record_format(records[0])]
    return [convert(r) for r in records]


def edit_request(case: dict) -> dict:
    """The fields apply_baft_to_model may train on; evaluation fields are left out on purpose."""
    request = {"prompt": case["prompt"], "target_new": case["target_new"]}
    if case.get("subject"):
        request["subject"] = case["subject"]
    return request
