"""EasyEdit's edit-quality measures, for use without the host (demo, CLI, quick checks).

Definitions follow EasyEdit's evaluator: the model reads prompt + ' ' + target in one
teacher-forced pass, and a score is the share of target tokens predicted as the argmax.
Locality is the share of answer tokens whose argmax is the same before and after the edit.
"""

from __future__ import annotations

from typing import List, Optional

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


def greedy_answer(model, tok, prompt: str, max_new_tokens: int = 8) -> str:
    """The model's greedy continuation of prompt: its first non-empty line."""
    device = model.get_input_embeddings().weight.device
    encoded = tok(prompt, return_tensors="pt").to(device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    text = tok.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.strip().split("\n")[0].strip()  # chat models often start with a newline


def harmonic_mean(values: List[Optional[float]]) -> float:
    values = [v for v in values if v is not None]
    if not values or min(values) <= 0:
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
