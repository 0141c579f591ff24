"""A sequential benchmark run cut off part-way resumes from its saved state: GRACE's codebook, restored
onto a freshly loaded model, edits and scores as the model that was never stopped."""

from __future__ import annotations

import sys

import torch

from host_testing import EXAMPLES, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_methods import METHODS  # noqa: E402
from bench_progress import SequenceCheckpoint  # noqa: E402
from bench_scenarios import apply_edit  # noqa: E402


def _grace_editor(model_path):
    from easyeditor import BaseEditor, GraceHyperParams

    hparams = GraceHyperParams.from_hparams(str(EXAMPLES / "hparams" / "GRACE" / "smollm2-135m.yaml"))
    hparams.model_name, hparams.n_iter = model_path, 5  # fewer optimisation steps: the same code, less CPU
    return BaseEditor.from_hparams(hparams)


def _logits_on(editor, prompts):
    """Each prompt alone, GRACE reading its last token, as the host's GRACE.generate has it read."""
    adapter = next(m for m in editor.model.modules() if type(m).__name__ == "GRACEAdapter")
    outputs = []
    for prompt in prompts:
        adapter.key_id = -1
        with torch.no_grad():
            outputs.append(editor.model(**editor.tok(prompt, return_tensors="pt")).logits[0, -1].clone())
    return torch.stack(outputs)


def _edit(editor, request):
    torch.manual_seed(0)  # GRACE draws each new value at random ('cold' init)
    apply_edit(editor, [request])


def test_grace_sequence_resumes_from_its_saved_codebook(model_path, zsre_records, tmp_path):
    requests = [{"prompt": r["src"], "target_new": r["alt"]} for r in zsre_records]
    edited_prompts = [r["prompt"] for r in requests]
    running = _grace_editor(model_path)
    for request in requests[:2]:
        _edit(running, request)
    SequenceCheckpoint(tmp_path / "GRACE.partial", {"run": 1}, METHODS["GRACE"]).save(running.model, {"n_edits": 2}, set())

    resumed = _grace_editor(model_path)
    with torch.no_grad():
        unedited = torch.stack([resumed.model(**resumed.tok(p, return_tensors="pt")).logits[0, -1]
                                for p in edited_prompts])
    assert SequenceCheckpoint(tmp_path / "GRACE.partial", {"run": 1}, METHODS["GRACE"]).restore(
        resumed.model, resumed.hparams) == {"n_edits": 2}
    restored = _logits_on(resumed, edited_prompts)
    assert not torch.equal(restored[:2], unedited[:2]), "the codebook changed nothing on the edited prompts"
    assert torch.equal(restored, _logits_on(running, edited_prompts))

    _edit(running, requests[2])
    _edit(resumed, requests[2])  # editing goes on from the restored codebook as from the original
    assert torch.equal(_logits_on(resumed, edited_prompts), _logits_on(running, edited_prompts))

    # A resumed sequence is scored through GRACE's wrapper, whose generate() keys on each prompt's last token.
    scored = METHODS["GRACE"].adapter.as_host_returns(resumed)
    adapter = next(m for m in resumed.model.modules() if type(m).__name__ == "GRACEAdapter")
    adapter.key_id = 0  # stale, as the bare model would keep it from an earlier prompt
    tokens = resumed.tok(edited_prompts[0], return_tensors="pt")
    scored.generate(**tokens, max_new_tokens=1, do_sample=False, pad_token_id=resumed.tok.eos_token_id)
    assert adapter.key_id == tokens["input_ids"].shape[1] - 1
