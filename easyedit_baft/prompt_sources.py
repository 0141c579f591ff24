"""Training-time text that is not the edit itself: unrelated prompts and context prefixes.

Unrelated prompts never come from a request's evaluation fields (rephrase, locality,
portability): training on those would leak the test into the edit.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import List, Optional

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


# relation_swapped_prompts: share of content words above which a template counts as a paraphrase.
RELATION_OVERLAP = 0.3

# locality_source names of the prompt pools shipped in easyedit_baft/data (see PROVENANCE.md there).
BUILTIN_SOURCE = "builtin"
PACKAGE_PREFIX = "package:"
PACKAGE_POOLS = {"unrelated_prompts": "unrelated_prompts.txt", "zsre_train_questions": "zsre_train_questions.txt"}


def _package_lines(name: str) -> tuple:
    text = resources.files("easyedit_baft").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def is_named_source(source) -> bool:
    """True for 'builtin' and 'package:NAME': pools shipped with the package, never file paths."""
    return isinstance(source, str) and (source == BUILTIN_SOURCE or source.startswith(PACKAGE_PREFIX))


class LocalitySource(str):
    """A locality_source path resolved against its YAML's folder, remembering the spelling the YAML gave.

    It is the resolved path wherever a string is used; saved edits record `given`, so they carry no
    absolute path of the machine they were made on.
    """

    def __new__(cls, resolved: str, given: Optional[str] = None):
        value = super().__new__(cls, resolved)
        value.given = resolved if given is None else given
        return value


def recorded_locality_source(source):
    """What a saved record keeps of a locality_source: the name the user gave, not the resolved path."""
    return str(source.given) if isinstance(source, LocalitySource) else source


@lru_cache(maxsize=None)
def builtin_unrelated_prompts() -> tuple:
    return _package_lines(PACKAGE_POOLS["unrelated_prompts"])


def _package_pool(source: str) -> tuple:
    name = source[len(PACKAGE_PREFIX):]
    if name not in PACKAGE_POOLS:
        raise FileNotFoundError(
            f"locality_source={source!r} names no shipped pool; use one of "
            f"{[PACKAGE_PREFIX + known for known in PACKAGE_POOLS]}, 'builtin' or the path of a prompts file"
        )
    return _package_lines(PACKAGE_POOLS[name])


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


# relation_templates: the shipped templates of each form ({} stands for the subject).
RELATION_TEMPLATE_FILES = {"questions": "relation_templates.txt", "statements": "relation_statements.txt"}


@lru_cache(maxsize=None)
def relation_templates(form: str = "questions") -> tuple:
    return _package_lines(RELATION_TEMPLATE_FILES[form])


def _content_words(text: str) -> set:
    words = re.findall(r"[a-z]+", text.lower())
    return {w for w in words if len(w) > 3}  # drops what, was, the, is, of, did, ...


def relation_swapped_prompts(prompt: str, subject, n: int, rng: random.Random, form: str = "questions",
                             max_overlap: float = RELATION_OVERLAP) -> List[str]:
    """The subject through n other relations, as templates of the given form ask or state them
    ([] when the subject is not in the prompt).

    Another fact about the same subject must keep its old answer: these prompts teach the gate to
    open on the edited relation too, not on the subject alone. A template sharing more than
    max_overlap of its content words with the edit prompt is skipped: it is likely a paraphrase
    of the edited prompt, which must change.
    """
    if n <= 0 or not isinstance(subject, str) or not subject.strip() or subject not in prompt:
        return []
    asked = _content_words(prompt.replace(subject, " "))
    chosen = []
    templates = relation_templates(form)
    for template in rng.sample(templates, len(templates)):
        words = _content_words(template.replace("{}", " "))
        if words and len(words & asked) / len(words | asked) > max_overlap:
            continue
        chosen.append(template.replace("{}", subject))
        if len(chosen) == n:
            break
    return chosen


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
    if source == BUILTIN_SOURCE:
        return builtin_unrelated_prompts()
    if source.startswith(PACKAGE_PREFIX):
        return _package_pool(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"locality_source={source!r} is neither 'builtin', a shipped pool ('{PACKAGE_PREFIX}NAME') nor an "
            "existing file; fix the path (a relative path in a YAML file is read from that file's folder)"
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
