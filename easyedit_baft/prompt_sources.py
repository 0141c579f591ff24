"""Training-time text that is not the edit itself: unrelated prompts and context prefixes.

Unrelated prompts never come from a request's evaluation fields (rephrase, locality,
portability): training on those would leak the test into the edit.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import List

# Short neutral openings placed before the prompt, so the edit holds in other contexts
# (ROME's "context templates", fixed here so that edits are deterministic and cheap).
CONTEXT_PREFIXES = (
    "Fact:",
    "I read that",
    "Question and answer.",
    "Here is what I know.",
    "As everyone knows,",
    "In short,",
)


def _package_lines(name: str) -> tuple:
    text = resources.files("easyedit_baft").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=None)
def builtin_unrelated_prompts() -> tuple:
    return _package_lines("unrelated_prompts.txt")


@lru_cache(maxsize=None)
def builtin_subject_names() -> tuple:
    return _package_lines("subject_names.txt")


def subject_swapped_prompts(prompt: str, subject, n: int, rng: random.Random) -> List[str]:
    """The edit prompt with its subject replaced by n other names ([] when the subject is not in it).

    The same question about someone else must keep its old answer: these prompts teach the gate
    to open on the subject, not on the relation the prompt asks about.
    """
    if n <= 0 or not isinstance(subject, str) or not subject.strip() or subject not in prompt:
        return []
    others = [name for name in builtin_subject_names() if name.lower() != subject.strip().lower()]
    return [prompt.replace(subject, name) for name in rng.sample(others, min(n, len(others)))]


def _prompts_from_records(records: list, path: Path) -> List[str]:
    """A list of strings, or of ZsRE/CounterFact-style records (their unrelated 'loc' prompt)."""
    prompts = []
    for record in records:
        if isinstance(record, str):
            prompts.append(record)
        elif isinstance(record, dict):
            for key in ("loc", "locality_prompt", "prompt", "src"):
                if isinstance(record.get(key), str) and record[key].strip():
                    # With its answer: an unrelated prompt is scored on its answer tokens too.
                    answer = record.get("loc_ans") if key == "loc" else None
                    text = record[key].strip()
                    prompts.append(f"{text} {answer.strip()}" if isinstance(answer, str) and answer.strip() else text)
                    break
    if not prompts:
        raise ValueError(
            f"locality_source {str(path)!r} holds no usable prompts; give a .txt with one prompt per "
            "line, a JSON list of strings, or ZsRE/CounterFact records with 'loc' or 'locality_prompt'"
        )
    return prompts


@lru_cache(maxsize=8)
def unrelated_prompts(source: str) -> tuple:
    """The pool of unrelated prompts named by hparams.locality_source."""
    if source == "builtin":
        return builtin_unrelated_prompts()
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"locality_source={source!r} is neither 'builtin' nor an existing file; fix the path"
        )
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"locality_source {source!r} is not valid JSON: {err}") from err
        if not isinstance(records, list):
            raise ValueError(f"locality_source {source!r} must hold a JSON list")
        return tuple(_prompts_from_records(records, path))
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return tuple(_prompts_from_records([line for line in lines if line], path))
