"""EasyEdit's edit-quality measures, for use without the host (demo, CLI, quick checks).

Definitions follow EasyEdit's evaluator: the model reads prompt + ' ' + target in one
teacher-forced pass, and a score is the share of target tokens predicted as the argmax.
Locality is the share of answer tokens whose argmax is the same before and after the edit.
Also the project's one summary of the host's per-record metrics: mean, harmonic mean, the scores
of one record and KnowEdit's own summary (used by the demo, the examples and the benchmarks).
"""

from __future__ import annotations

import math
import re
import string
from typing import Dict, List, Optional

import torch


def _answer_argmax(model, tok, prompt: str, answer: str) -> tuple:
    """(argmax token ids at the answer positions, the answer's token ids)."""
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(f"{prompt} {answer}")["input_ids"]
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]
    predicted = logits[n_prompt - 1 : len(ids) - 1].argmax(-1).tolist()
    return predicted, ids[n_prompt:]


def target_accuracy(model, tok, prompt: str, target: str) -> float:
    """Share of target tokens that are the argmax after prompt (EasyEdit's rewrite/rephrase acc)."""
    predicted, wanted = _answer_argmax(model, tok, prompt, target)
    if not wanted:
        return 0.0
    return sum(int(p == w) for p, w in zip(predicted, wanted)) / len(wanted)


def answer_tokens(model, tok, prompt: str, answer: str) -> List[int]:
    """The argmax tokens at the answer positions: run before an edit, compare after it."""
    return _answer_argmax(model, tok, prompt, answer)[0]


def locality(before: List[int], after: List[int]) -> float:
    if not before:
        return 1.0
    return sum(int(a == b) for a, b in zip(before, after)) / len(before)


def greedy_ids(model, tok, prompt: str, max_new_tokens: int) -> List[int]:
    """The token ids `model.generate` greedily continues `prompt` with (at most max_new_tokens).

    `model` may be a host wrapper (GRACE, WISE) whose generate() does its own routing."""
    device = next(model.parameters()).device
    encoded = tok(prompt, return_tensors="pt").to(device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    return out[0, encoded["input_ids"].shape[1]:].tolist()


def greedy_answer(model, tok, prompt: str, max_new_tokens: int = 8) -> str:
    """The model's greedy continuation of prompt: its first non-empty line."""
    text = tok.decode(greedy_ids(model, tok, prompt, max_new_tokens), skip_special_tokens=True)
    return text.strip().split("\n")[0].strip()  # chat models often start with a newline


# ---- generation-based exact match ------------------------------------------------------------
# Teacher forcing shows the model the target's earlier tokens; these scores read only what the model
# generates from the prompt alone. rel/gen/port: the normalised answer starts the greedy continuation.
# loc: the greedy continuation of an unrelated prompt is token for token the unedited model's.

EM_SLACK_TOKENS = 2  # tokenisation after a prompt can take a token or two more than the answer alone
EM_LOC_MAX_TOKENS = 16


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's answer normalisation)."""
    text = "".join(ch for ch in str(text).lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _aliases(answers) -> List[str]:
    """An answer, a list of aliases, or KnowEdit's list of alias lists, as one flat list of strings."""
    if isinstance(answers, (list, tuple)):
        return [alias for answer in answers for alias in _aliases(answer)]
    return [] if answers is None else [str(answers)]


def _pairs(item: dict) -> list:
    """(prompt, answers) of a locality or portability item: one prompt with its answer (aliases), or lists."""
    if isinstance(item["prompt"], str):
        return [(item["prompt"], item["ground_truth"])]
    return list(zip(item["prompt"], item["ground_truth"]))


def _answer_budget(tok, answer: str, cap: Optional[int] = None) -> int:
    n = max(1, len(tok(" " + str(answer), add_special_tokens=False)["input_ids"]))
    return min(n, cap) if cap else n


def generates_answer(model, tok, prompt: str, answers) -> float:
    """1.0 when the greedy continuation of prompt starts with one of `answers` (aliases), once normalised."""
    answers = [a for a in _aliases(answers) if normalise_answer(a)]
    if not answers:
        return None
    budget = max(_answer_budget(tok, a) for a in answers) + EM_SLACK_TOKENS
    generated = normalise_answer(tok.decode(greedy_ids(model, tok, prompt, budget), skip_special_tokens=True))
    return float(any(generated.startswith(normalise_answer(a)) for a in answers))


def locality_continuations(model, tok, request: dict) -> Dict[str, List[List[int]]]:
    """Per locality kind, the greedy continuation ids of each of its prompts (run before the edit)."""
    out = {}
    for kind, item in (request.get("locality") or {}).items():
        out[kind] = [greedy_ids(model, tok, p, _answer_budget(tok, (_aliases(a) or [""])[0], EM_LOC_MAX_TOKENS))
                     for p, a in _pairs(item)]
    return out


def exact_match(model, tok, request: dict, locality_before: Optional[Dict[str, List[List[int]]]]) -> dict:
    """Generation-based scores of one request: {rel, gen, loc, port} (None where a field is absent).

    locality_before: locality_continuations of the unedited model for this request."""
    rel = generates_answer(model, tok, request["prompt"], request["target_new"])
    rephrases = request.get("rephrase_prompt")
    gen = mean([generates_answer(model, tok, p, request["target_new"]) for p in _as_list(rephrases)]) \
        if rephrases else None
    port = mean([mean([generates_answer(model, tok, p, a) for p, a in _pairs(hop)])
                 for hop in (request.get("portability") or {}).values()])
    loc = None
    if locality_before:
        after = locality_continuations(model, tok, request)
        loc = mean([mean([float(a == b) for a, b in zip(after[kind], before)])
                    for kind, before in locality_before.items()])
    return {"rel": rel, "gen": gen, "loc": loc, "port": port}


def mean(values) -> Optional[float]:
    """The one mean of the project's scores: None and NaN are left out, a list counts as its own mean,
    and nothing left to average gives None (not measured), never 0."""
    kept = []
    for value in values:
        if getattr(value, "ndim", 0) > 0:  # a numpy array, as the host returns some scores
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            value = mean(value)
        if value is not None and not math.isnan(float(value)):
            kept.append(float(value))
    return sum(kept) / len(kept) if kept else None


def harmonic_mean(values: List[Optional[float]]) -> Optional[float]:
    """Harmonic mean of the measured values (a missing one, e.g. no rephrase field, is left out);
    None when none is measured, 0 when any is 0."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _kinds(section: Optional[dict]) -> Dict[str, Optional[float]]:
    """The host's {'<kind>_acc': [...]} -> {kind: mean}."""
    return {k[: -len("_acc")]: mean([v]) for k, v in (section or {}).items() if k.endswith("_acc")}


def record_scores(post: dict) -> dict:
    """One record's scores from the host's metric dict of one phase ('post' or 'pre').

    rel/gen: rewrite_acc and rephrase_acc; loc/port: the mean over the record's kinds of each kind's
    mean, as EasyEdit's KnowEdit summary takes them; the kinds themselves; fluency: n-gram entropy.
    """
    locality, portability = _kinds(post.get("locality")), _kinds(post.get("portability"))
    return {
        "rel": mean([post.get("rewrite_acc")]), "gen": mean([post.get("rephrase_acc")]),
        "loc": mean(locality.values()), "port": mean(portability.values()),
        "fluency": (post.get("fluency") or {}).get("ngram_entropy"),
        "loc_kinds": locality, "port_kinds": portability,
    }


def _by_kind(scores: List[dict], field: str) -> Dict[str, Optional[float]]:
    kinds = list(dict.fromkeys(k for s in scores for k in (s.get(field) or {})))
    return {k: mean([(s.get(field) or {}).get(k) for s in scores]) for k in kinds}


def knowedit_summary(scores: List[dict]) -> dict:
    """KnowEdit's own summary over per-record scores (record_scores), as EasyEdit's KnowEdit script
    computes it: Edit Succ (rewrite accuracy), Portability and Locality (per record the mean of its
    kinds, then over the records that have any; and each kind over the records that have it),
    Fluency (n-gram entropy), and the harmonic mean of Edit Succ, Portability and Locality."""
    summary = {
        "edit_succ": mean([s.get("rel") for s in scores]),
        "portability": mean([s.get("port") for s in scores]), "portability_kinds": _by_kind(scores, "port_kinds"),
        "locality": mean([s.get("loc") for s in scores]), "locality_kinds": _by_kind(scores, "loc_kinds"),
        "fluency": mean([s.get("fluency") for s in scores]),
    }
    summary["hm"] = harmonic_mean([summary["edit_succ"], summary["portability"], summary["locality"]])
    return summary


def fluency_without_punkt() -> bool:
    """Let the host's fluency metric run where NLTK's punkt_tab data is missing; True if it was.

    The host's n-gram entropy calls nltk.word_tokenize, which first splits sentences with punkt_tab
    (a separate download). preserve_line=True skips only that sentence split; the word tokenizer
    and so the metric's definition stay NLTK's own.
    """
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return False
    except LookupError:
        pass
    word_tokenize = getattr(nltk.word_tokenize, "__wrapped__", nltk.word_tokenize)

    def word_tokenize_one_line(text, language="english", preserve_line=False):
        return word_tokenize(text, language=language, preserve_line=True)

    word_tokenize_one_line.__wrapped__ = word_tokenize
    nltk.word_tokenize = word_tokenize_one_line
    return True
