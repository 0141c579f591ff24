"""Edit requests as EasyEdit passes them: validation and tokenisation for training."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Sequence

import torch

LOG = logging.getLogger(__name__)


class RequestError(ValueError):
    """An edit request is malformed; the message names the request, the field and the fix."""


def _describe(index: int, request) -> str:
    prompt = request.get("prompt") if isinstance(request, dict) else None
    return f"request {index}" + (f" (prompt {prompt!r:.60})" if isinstance(prompt, str) else "")


def _check_text(index: int, request: dict, field: str, required: bool) -> None:
    value = request.get(field)
    if value is None:
        if required:
            raise RequestError(f"{_describe(index, request)}: field '{field}' is missing; give a non-empty string")
        return
    if not isinstance(value, str):
        raise RequestError(
            f"{_describe(index, request)}: field '{field}' is a {type(value).__name__} ({value!r:.60}); "
            "it must be a string"
        )
    if required and not value.strip():
        raise RequestError(f"{_describe(index, request)}: field '{field}' is empty or whitespace; give text")


def validate_requests(requests) -> List[dict]:
    """Check every field BaFT reads; raise RequestError before anything is touched."""
    if isinstance(requests, dict):
        requests = [requests]
    if not isinstance(requests, (list, tuple)) or not requests:
        raise RequestError(f"requests={requests!r:.80} is empty or not a list; pass a list of request dicts")
    seen = set()
    for index, request in enumerate(requests):
        if not isinstance(request, dict):
            raise RequestError(f"request {index} is a {type(request).__name__}; it must be a dict")
        _check_text(index, request, "prompt", required=True)
        _check_text(index, request, "target_new", required=True)
        _check_text(index, request, "subject", required=False)
        _check_text(index, request, "loc_prompt", required=False)
        subject = request.get("subject")
        if subject is not None and subject not in request["prompt"]:
            raise RequestError(
                f"{_describe(index, request)}: subject {subject!r} does not occur in the prompt; "
                "fix the subject or drop it"
            )
        key = (request["prompt"], request["target_new"])
        if key in seen:
            raise RequestError(
                f"{_describe(index, request)}: duplicates an earlier request in the same batch "
                f"(same prompt and target_new {request['target_new']!r}); remove the duplicate"
            )
        seen.add(key)
    return list(requests)


@dataclass
class TokenizedBatch:
    """Right-padded token ids, an attention mask, labels (-100 where no loss) and row lengths."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "TokenizedBatch":
        return TokenizedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def target_token_ids(tok, prompt: str, target: str, max_length: int, where: str) -> tuple:
    """Token ids of prompt + ' ' + target, and how many belong to the prompt.

    Mirrors EasyEdit's evaluator, which scores the tokens of `prompt + ' ' + target` after
    the prompt's own tokens, so training and evaluation see the same token boundary.
    """
    prompt_ids = tok(prompt)["input_ids"]
    full_ids = tok(prompt + " " + target)["input_ids"]
    n_prompt = len(prompt_ids)
    if len(full_ids) <= n_prompt:
        raise RequestError(f"{where}: target {target!r} adds no tokens after the prompt; give a target with text")
    if len(full_ids) > max_length:
        n_target = len(full_ids) - n_prompt
        if n_target >= max_length:
            raise RequestError(
                f"{where}: target {target!r} alone has {n_target} tokens, more than max_length={max_length}; "
                "raise max_length or shorten the target"
            )
        # Keep the end of the prompt: it is what the target follows.
        cut = len(full_ids) - max_length
        LOG.warning("%s: prompt + target has %d tokens > max_length=%d; the prompt's first %d tokens are dropped",
                    where, len(full_ids), max_length, cut)
        full_ids, n_prompt = full_ids[cut:], n_prompt - cut
    return full_ids, n_prompt


def pad_rows(rows: Sequence[Sequence[int]], label_from: Sequence[int], pad_id: int) -> TokenizedBatch:
    """Right-pad token rows; labels are the ids from label_from[i] on, -100 elsewhere."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, label_from)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        labels[i, start : len(row)] = ids[i, start : len(row)]
    return TokenizedBatch(ids, mask, labels)


def pad_id_of(tok) -> int:
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
