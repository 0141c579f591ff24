"""Benchmark records (ZsRE, CounterFact, KnowEdit, WikiBio) as edit cases, and where the data lives.

The one mapping from every record shape this project reads to what an edit needs. An edit case
carries the request BaFT trains on (prompt, target_new, subject) and the fields only evaluation
may read (rephrase, locality, portability): training never sees the latter. `edit_kwargs` turns
records into the keyword arguments of EasyEdit's BaseEditor.edit (and of its `_prepare_requests`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

DATA_ENV = "EASYEDIT_BAFT_DATA"
PACKAGE_DIR = Path(__file__).resolve().parent
# Real ZsRE eval facts shipped for the demo (easyedit_baft/data/PROVENANCE.md says where from).
DEMO_FACTS = PACKAGE_DIR / "data" / "zsre_demo_facts.json"
DEFAULT_CONFIG_NAME = "smollm2-135m.yaml"

# The host's KnowEditDataset item keys -> the KnowEdit JSON's own section names.
KNOWEDIT_ITEM_LOCALITY = {"locality_rs": "Relation_Specificity", "locality_f": "Forgetfulness"}
KNOWEDIT_ITEM_PORTABILITY = {"portability_r": "Reasoning", "portability_s": "Subject_Aliasing",
                             "portability_l": "Logical_Generalization"}


def default_data_dir() -> Path:
    """Where the full benchmark sets live: $EASYEDIT_BAFT_DATA, else ../shared/data beside the checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return PACKAGE_DIR.parent.parent / "shared" / "data"


def shipped_config(name: str = DEFAULT_CONFIG_NAME) -> Path:
    """hparams/BaFT/NAME: in an installed wheel it lies in easyedit_baft/configs (see setup.py)."""
    installed = PACKAGE_DIR / "configs" / name
    return installed if installed.is_file() else PACKAGE_DIR.parent / "hparams" / "BaFT" / name


def first_text(value) -> Optional[str]:
    """KnowEdit nests answers in lists of aliases; EasyEdit scores the first."""
    while isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def _pair(prompt, answer) -> Optional[tuple]:
    """One (prompt, answer) of a one-per-record section; None where the record has none."""
    answer = first_text(answer)
    return (first_text(prompt), answer) if prompt and answer else None


def _pairs(entries) -> List[tuple]:
    """A KnowEdit list of {prompt, ground_truth} -> [(prompt, answer)], without empty answers (unscorable)."""
    pairs = [(first_text(e.get("prompt")), first_text(e.get("ground_truth"))) for e in entries or []]
    return [(q, a) for q, a in pairs if q and a and a.strip()]


def _case(prompt, target_new, subject=None, ground_truth=None, rephrase_prompt=None,
          locality=None, portability=None) -> dict:
    """An edit case. Sections map a kind to one (prompt, answer) or, KnowEdit's, a list of them."""
    locality = {k: v for k, v in (locality or {}).items() if v}
    portability = {k: v for k, v in (portability or {}).items() if v}

    def first(sections):  # the demo and CLI read one pair per section, the first
        for value in sections.values():
            return value if isinstance(value, tuple) else value[0]
        return None, None

    loc_prompt, loc_answer = first(locality)
    port_prompt, port_answer = first(portability)
    return {
        "prompt": prompt, "target_new": first_text(target_new), "subject": subject or None,
        "ground_truth": first_text(ground_truth), "rephrase_prompt": first_text(rephrase_prompt),
        "locality": locality, "portability": portability,
        "locality_prompt": loc_prompt, "locality_ground_truth": loc_answer,
        "portability_prompt": port_prompt, "portability_ground_truth": port_answer,
    }


def _from_zsre(r: dict) -> dict:
    portability = r.get("portability") or {}
    return _case(r["src"], r["alt"], r.get("subject"), r.get("answers") or r.get("pred"), r.get("rephrase"),
                 {"neighborhood": _pair(r.get("loc"), r.get("loc_ans"))},
                 {"one_hop": _pair(portability.get("New Question"), portability.get("New Answer"))})


def _from_counterfact(r: dict) -> dict:
    return _case(r["prompt"], r["target_new"], r.get("subject"), r.get("ground_truth"), r.get("rephrase_prompt"),
                 {"neighborhood": _pair(r.get("locality_prompt"), r.get("locality_ground_truth"))})


def _from_knowedit(r: dict) -> dict:
    """KnowEdit's ZsRE, WikiData_counterfact and WikiData_recent (insertions carry no ground_truth)."""
    return _case(r["prompt"], r["target_new"], r.get("subject"), r.get("ground_truth"), r.get("rephrase_prompt"),
                 {k: _pairs(v) for k, v in (r.get("locality") or {}).items()},
                 {k: _pairs(v) for k, v in (r.get("portability") or {}).items()})


def _from_wikibio(r: dict) -> dict:
    """KnowEdit's WikiBio: a passage (text) continued by a new sentence (labels) about a concept."""
    return _case(r["text"], r["labels"], r.get("concept"),
                 locality={k: _pairs(v) for k, v in (r.get("locality") or {}).items()})


def _from_knowedit_item(r: dict) -> dict:
    """An item of the host's KnowEditDataset (its own renaming of the KnowEdit JSON)."""
    return _case(r["prompt"], r["target_new"], r.get("subject"), r.get("ground_truth"), r.get("rephrase_prompt"),
                 {name: _pairs(r.get(key)) for key, name in KNOWEDIT_ITEM_LOCALITY.items()},
                 {name: _pairs(r.get(key)) for key, name in KNOWEDIT_ITEM_PORTABILITY.items()})


# Format -> (keys that tell it apart, converter); the first whose keys a record has wins.
FORMATS: Dict[str, tuple] = {
    "zsre": ({"src", "alt"}, _from_zsre),
    "wikibio": ({"text", "labels", "concept"}, _from_wikibio),
    "knowedit_item": ({"prompt", "target_new", "locality_rs"}, _from_knowedit_item),
    "knowedit": ({"prompt", "target_new", "locality"}, _from_knowedit),
    "counterfact": ({"prompt", "target_new", "locality_prompt"}, _from_counterfact),
    "requests": ({"prompt", "target_new"}, _from_counterfact),
}


def record_format(record: dict) -> str:
    """The format name of one record (a key of FORMATS), told apart by its keys."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    for name, (keys, _) in FORMATS.items():
        if keys <= set(record):
            return name
    raise ValueError(
        f"record with keys {sorted(record)} is in no known format; expected ZsRE (src, alt), "
        "CounterFact (prompt, target_new, locality_prompt), KnowEdit (prompt, target_new, locality), "
        "WikiBio (text, labels, concept) or plain requests (prompt, target_new)"
    )


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


def edit_cases(records: List[dict], fmt: Optional[str] = None) -> List[dict]:
    """Records of one format (detected from the first unless given) as edit cases."""
    fmt = fmt or record_format(records[0])
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; use one of {list(FORMATS)}")
    convert: Callable[[dict], dict] = FORMATS[fmt][1]
    return [convert(r) for r in records]


def load_edit_cases(path, n: Optional[int] = None) -> List[dict]:
    """The first n records of a ZsRE, CounterFact, KnowEdit, WikiBio or plain-requests JSON file."""
    return edit_cases(read_records(path, n))


def edit_request(case: dict) -> dict:
    """The fields apply_baft_to_model may train on; evaluation fields are left out on purpose."""
    request = {"prompt": case["prompt"], "target_new": case["target_new"]}
    if case.get("subject"):
        request["subject"] = case["subject"]
    return request


def _columns(cases: List[dict], section: str) -> Optional[dict]:
    """Per kind, EasyEdit's {'prompt': [...], 'ground_truth': [...]}: a string per record for a single
    pair, a list for KnowEdit's lists, None where a record has none of that kind."""
    kinds = list(dict.fromkeys(k for c in cases for k in c[section]))
    columns = {}
    for kind in kinds:
        values = [c[section].get(kind) for c in cases]
        columns[kind] = {
            "prompt": [None if v is None else v[0] if isinstance(v, tuple) else [q for q, _ in v] for v in values],
            "ground_truth": [None if v is None else v[1] if isinstance(v, tuple) else [a for _, a in v]
                             for v in values],
        }
    return columns or None


def edit_kwargs(records: List[dict], fmt: Optional[str] = None) -> dict:
    """Keyword arguments for BaseEditor.edit (fresh lists: the host mutates what it is given).

    subject, ground_truth and rephrase_prompts are given only when every record has one; without
    ground_truth (WikiBio, knowledge insertion) the host fills in its own placeholder.
    """
    cases = edit_cases(list(records), fmt)
    kwargs = dict(prompts=[c["prompt"] for c in cases], target_new=[c["target_new"] for c in cases],
                  locality_inputs=_columns(cases, "locality"), portability_inputs=_columns(cases, "portability"))
    for name, field in (("subject", "subject"), ("ground_truth", "ground_truth"),
                        ("rephrase_prompts", "rephrase_prompt")):
        if all(c[field] for c in cases):
            kwargs[name] = [c[field] for c in cases]
    return kwargs
