"""Benchmark records -> the keyword arguments of EasyEdit's BaseEditor.edit.

Three record shapes are understood:
- 'zsre': the ZsRE files (src, alt, answers, rephrase, loc, loc_ans, portability{New Question, New Answer});
- 'counterfact': the CounterFact file, and the items of the host's ZsreDataset and CounterFactDataset
  (prompt, target_new, ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth[, subject]);
- 'knowedit': the items of the host's KnowEditDataset (prompt, target_new, subject,
  locality_rs/locality_f, portability_r/portability_s/portability_l).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import host_setup  # noqa: F401  (puts the checkout on sys.path)
from easyedit_baft.records import read_records  # noqa: E402

FORMATS = ("zsre", "counterfact", "knowedit")

# KnowEditDataset item key -> the section name the host reports the metric under.
KNOWEDIT_LOCALITY = {"locality_rs": "Relation_Specificity", "locality_f": "Forgetfulness"}
KNOWEDIT_PORTABILITY = {"portability_s": "Subject_Aliasing", "portability_r": "reasoning",
                        "portability_l": "Logical_Generalization"}


def detect_format(record: dict) -> str:
    """The shape of one record, or a ValueError that lists the shapes understood."""
    keys = set(record) if isinstance(record, dict) else set()
    if {"src", "alt", "loc", "loc_ans"} <= keys:
        return "zsre"
    if {"prompt", "target_new", "locality_prompt", "locality_ground_truth"} <= keys:
        return "counterfact"
    if {"prompt", "target_new"} <= keys and keys & (set(KNOWEDIT_LOCALITY) | set(KNOWEDIT_PORTABILITY)):
        return "knowedit"
    raise ValueError(
        f"record with keys {sorted(keys)} matches no known format; expected ZsRE (src, alt, loc, loc_ans), "
        "CounterFact (prompt, target_new, locality_prompt, locality_ground_truth) or KnowEditDataset items"
    )


def load_records(path: Path, n: Optional[int] = None) -> Tuple[List[dict], str]:
    """The first n records of a JSON list file and their detected format."""
    records = read_records(path, n)
    return records, detect_format(records[0])


def _first_text(answer) -> str:
    """KnowEdit answers nest lists of aliases; the first alias is the one scored."""
    while isinstance(answer, list):
        answer = answer[0] if answer else ""
    return answer if isinstance(answer, str) else str(answer)


def _section(prompts: Sequence, answers: Sequence) -> Dict[str, list]:
    return {"prompt": list(prompts), "ground_truth": list(answers)}


def _zsre_kwargs(records: List[dict]) -> dict:
    kwargs = dict(
        prompts=[r["src"] for r in records],
        target_new=[r["alt"] for r in records],
        ground_truth=[_first_text(r["answers"]) for r in records],
        rephrase_prompts=[r["rephrase"] for r in records],
        locality_inputs={"neighborhood": _section([r["loc"] for r in records], [r["loc_ans"] for r in records])},
    )
    if all("subject" in r for r in records):
        kwargs["subject"] = [r["subject"] for r in records]
    if all(isinstance(r.get("portability"), dict) for r in records):
        kwargs["portability_inputs"] = {"one_hop": _section(
            [r["portability"]["New Question"] for r in records],
            [r["portability"]["New Answer"] for r in records])}
    return kwargs


def _counterfact_kwargs(records: List[dict]) -> dict:
    kwargs = dict(
        prompts=[r["prompt"] for r in records],
        target_new=[r["target_new"] for r in records],
        ground_truth=[_first_text(r.get("ground_truth")) for r in records],
        rephrase_prompts=[_first_text(r["rephrase_prompt"]) for r in records],
        locality_inputs={"neighborhood": _section(
            [r["locality_prompt"] for r in records], [_first_text(r["locality_ground_truth"]) for r in records])},
    )
    if all(r.get("subject") for r in records):
        kwargs["subject"] = [r["subject"] for r in records]
    return kwargs


def _knowedit_section(records: List[dict], key: str) -> Optional[Dict[str, list]]:
    """One locality/portability section: per record a list of prompts, or None where it has none."""
    prompts, answers = [], []
    for record in records:
        pairs = [(p["prompt"], _first_text(p["ground_truth"])) for p in (record.get(key) or [])]
        pairs = [(q, a) for q, a in pairs if a.strip()]  # an empty answer cannot be scored
        prompts.append([q for q, _ in pairs] or None)
        answers.append([a for _, a in pairs] or None)
    return None if all(p is None for p in prompts) else _section(prompts, answers)


def _knowedit_kwargs(records: List[dict]) -> dict:
    kwargs = dict(
        prompts=[r["prompt"] for r in records],
        target_new=[_first_text(r["target_new"]) for r in records],
        subject=[r["subject"] for r in records],
    )
    if all(r.get("ground_truth") is not None for r in records):
        kwargs["ground_truth"] = [_first_text(r["ground_truth"]) for r in records]
    if all(r.get("rephrase_prompt") for r in records):
        kwargs["rephrase_prompts"] = [r["rephrase_prompt"] for r in records]
    for target, names in (("locality_inputs", KNOWEDIT_LOCALITY), ("portability_inputs", KNOWEDIT_PORTABILITY)):
        sections = {name: _knowedit_section(records, key) for key, name in names.items()}
        sections = {name: s for name, s in sections.items() if s is not None}
        kwargs[target] = sections or None
    return kwargs


def edit_kwargs(records: List[dict], fmt: Optional[str] = None) -> dict:
    """Keyword arguments for BaseEditor.edit (fresh lists: the host mutates what it is given)."""
    records = list(records)
    fmt = fmt or detect_format(records[0])
    builders = {"zsre": _zsre_kwargs, "counterfact": _counterfact_kwargs, "knowedit": _knowedit_kwargs}
    if fmt not in builders:
        raise ValueError(f"format {fmt!r} is unknown; use one of {list(FORMATS)}")
    return builders[fmt](records)
