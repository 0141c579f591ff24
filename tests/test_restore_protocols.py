"""The undo callable apply_baft_to_model returns, which EasyEdit calls after a non-sequential edit,
gives the unedited model back (tests/host checks it through the real restore_after_edit)."""

import torch

from tiny_models import REQUESTS, edit, logits, tiny_llama


def test_calling_the_undo_restores(tok):
    model = tiny_llama()
    before = logits(model, tok)
    model, undo = edit(model, tok, REQUESTS[0], return_orig_weights=True)
    assert not torch.equal(logits(model, tok), before)
    undo()
    assert torch.equal(logits(model, tok), before)

