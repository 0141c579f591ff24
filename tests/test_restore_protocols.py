"""Both ways EasyEdit hosts restore a model after a non-sequential edit give the unedited model back."""

import torch

from tiny_models import REQUESTS, edit, logits, tiny_llama


def test_calling_the_undo_restores(tok):
    model = tiny_llama()
    before = logits(model, tok)
    model, undo = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert not torch.equal(logits(model, tok), before)
    undo()
    assert torch.equal(logits(model, tok), before)


def test_iterating_items_like_older_easyedit_restores(tok):
    model = tiny_llama()
    before = logits(model, tok)
    model, weights_copy = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert not torch.equal(logits(model, tok), before)
    assert list(weights_copy.items()) == []  # nothing to copy back: the undo already ran
    assert torch.equal(logits(model, tok), before)
