"""BaFT through the host's BaseEditor: non-sequential, sequential and batch editing, generation, loc_prompts."""

from __future__ import annotations

import json

import numpy as np
import torch

from easyedit_baft.records import edit_kwargs
from easyedit_baft.metrics import fluency_without_punkt
from host_testing import ZSRE_TRAIN, assert_zsre_metrics, baft_hparams, need_data, probe_logits

from easyedit_baft.layers import get_state


def _editor(model_path, **overrides):
    from easyeditor import BaseEditor

    return BaseEditor.from_hparams(baft_hparams(model_path, **overrides))


def _spy(editor, calls: list):
    """Record each apply_algo call's requests, and the probe logits at its start."""
    apply = editor.apply_algo

    def spied(model, tok, requests, *args, **kwargs):
        calls.append({"requests": requests, "logits": probe_logits(editor)})
        return apply(model, tok, requests, *args, **kwargs)

    editor.apply_algo = spied


def test_non_sequential_edits_are_restored_bit_identically(model_path, zsre_records):
    editor = _editor(model_path)
    reference = probe_logits(editor)
    calls = []
    _spy(editor, calls)
    metrics, _, _ = editor.edit(**edit_kwargs(zsre_records[:2], "zsre"), sequential_edit=False, verbose=False)

    assert len(calls) == 2
    for call in calls:  # the second call starts right after the host restored the first edit
        assert torch.equal(call["logits"], reference)
    assert torch.equal(probe_logits(editor), reference)
    assert get_state(editor.model) is None  # no hooks left behind
    assert_zsre_metrics(metrics, 2)
    pre = np.mean([np.mean(m["pre"]["rewrite_acc"]) for m in metrics])
    post = np.mean([np.mean(m["post"]["rewrite_acc"]) for m in metrics])
    assert post > pre and post >= 0.8, (pre, post)


def test_sequential_edits_accumulate_and_the_first_still_holds(model_path, zsre_records):
    from easyeditor.evaluate import compute_edit_quality

    # Continual editing: each new edit trains until the replayed earlier edits hold again too.
    editor = _editor(model_path, early_stop_waits_for_replay=True)
    metrics, edited_model, _ = editor.edit(**edit_kwargs(zsre_records, "zsre"), sequential_edit=True, verbose=False)

    assert edited_model is editor.model
    state = get_state(editor.model)
    assert state is not None and state.edit_count == len(zsre_records)
    assert_zsre_metrics(metrics, len(zsre_records))
    first = metrics[0]["requested_rewrite"]
    final = compute_edit_quality(editor.model, editor.model_name, editor.hparams, editor.tok, first, "cpu")
    assert final["rewrite_acc"] == [1.0], final["rewrite_acc"]


def test_batch_edit(model_path, zsre_records):
    editor = _editor(model_path, batch_size=2)
    reference = probe_logits(editor)
    metrics, _, _ = editor.batch_edit(**edit_kwargs(zsre_records[:2], "zsre"), sequential_edit=False, verbose=False)

    assert_zsre_metrics(metrics, 2)
    assert all("pre" in m and m["time"] > 0 for m in metrics)
    assert np.mean([np.mean(m["post"]["rewrite_acc"]) for m in metrics]) >= 0.8
    assert torch.equal(probe_logits(editor), reference)
    assert get_state(editor.model) is None


def test_test_generation_reports_fluency(model_path, zsre_records, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk, "word_tokenize", nltk.word_tokenize)  # undone after the test
    fluency_without_punkt()  # the host's fluency needs NLTK data an offline machine may lack
    editor = _editor(model_path)
    metrics, _, _ = editor.edit(**edit_kwargs(zsre_records[:1], "zsre"), sequential_edit=False,
                                verbose=False, test_generation=True)
    fluency = metrics[0]["post"]["fluency"]
    assert np.isfinite(fluency["ngram_entropy"]) and fluency["ngram_entropy"] > 0


def test_loc_prompts_reach_baft(model_path, zsre_records):
    """WISE's keyword: unrelated training prompts, here from the ZsRE train split (not the eval fields)."""
    train = json.loads(need_data(ZSRE_TRAIN).read_text(encoding="utf-8"))[:1]
    loc_prompts = [r["loc"] + " " + r["loc_ans"] for r in train]
    editor = _editor(model_path)
    calls = []
    _spy(editor, calls)
    metrics, _, _ = editor.edit(**edit_kwargs(zsre_records[:1], "zsre"), loc_prompts=loc_prompts,
                                sequential_edit=False, verbose=False)
    assert calls[0]["requests"][0]["loc_prompt"] == loc_prompts[0]
    assert_zsre_metrics(metrics, 1)
