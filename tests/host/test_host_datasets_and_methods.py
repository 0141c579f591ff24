"""The host's datasets feed BaFT unchanged; ROME, MEMIT and GRACE run in the same loop as BaFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from easyedit_baft.records import edit_kwargs, record_format
from easyedit_baft.metrics import mean, record_scores
from host_testing import (COUNTERFACT, EXAMPLES, KNOWEDIT_ZSRE, ZSRE_EVAL, ZSRE_TRAIN, baft_hparams, need_data,
                          probe_logits)

from easyedit_baft.layers import get_state


@pytest.fixture(scope="module")
def baft_editor(model_path):
    from easyeditor import BaseEditor

    return BaseEditor.from_hparams(baft_hparams(model_path))


@pytest.mark.parametrize("dataset, path, fmt", [
    ("ZsreDataset", ZSRE_EVAL, "counterfact"),
    ("CounterFactDataset", COUNTERFACT, "counterfact"),
    ("KnowEditDataset", KNOWEDIT_ZSRE, "knowedit_item"),
])
def test_host_dataset_feeds_baft(baft_editor, dataset, path, fmt):
    import easyeditor

    items = list(getattr(easyeditor, dataset)(str(need_data(path)), size=1))
    assert record_format(items[0]) == fmt
    metrics, _, _ = baft_editor.edit(**edit_kwargs(items), sequential_edit=False, verbose=False)

    post = metrics[0]["post"]
    assert 0.0 <= post["rewrite_acc"][0] <= 1.0
    assert post["rewrite_acc"][0] > metrics[0]["pre"]["rewrite_acc"][0]
    assert post["locality"], "the dataset's locality prompts were scored"
    assert get_state(baft_editor.model) is None


# MEMIT on two of the examples' five layers, with statistics from 200 local texts: the same code
# path as the examples' MEMIT, at a fraction of the CPU time.
MEMIT_LAYERS = [4, 5]
MEMIT_STATS_TEXTS = 200


def _hparams(method: str, model_path: str, stats_dir: Path):
    from easyeditor import GraceHyperParams, MEMITHyperParams, ROMEHyperParams

    if method == "BaFT":
        return baft_hparams(model_path)
    cls = {"ROME": ROMEHyperParams, "MEMIT": MEMITHyperParams, "GRACE": GraceHyperParams}[method]
    hparams = cls.from_hparams(str(EXAMPLES / "hparams" / method / "smollm2-135m.yaml"))
    hparams.model_name = model_path
    if method == "ROME":  # fewer optimisation steps and context templates: the same code, less CPU time
        hparams.v_num_grad_steps, hparams.context_template_length_params = 10, [[5, 5]]  # the fewest templates: one per seed word
    if method == "MEMIT":
        hparams.v_num_grad_steps, hparams.layers = 10, MEMIT_LAYERS
        hparams.stats_dir, hparams.mom2_n_samples = str(stats_dir), MEMIT_STATS_TEXTS
    return hparams


def _write_memit_stats(editor, model_path: str) -> None:
    """Second moments of MEMIT's layers from local text (ZsRE train questions), in the files the host
    reads: with them present it downloads nothing (examples/memit_stats.py does the same at full size)."""
    from memit_stats import collect, corpus_texts, save, statistics_files

    hp = editor.hparams
    texts = corpus_texts([need_data(ZSRE_TRAIN)])[:hp.mom2_n_samples]
    names = [hp.rewrite_module_tmp.format(layer) for layer in hp.layers]
    last_block = editor.model.get_submodule(hp.layer_module_tmp.format(max(hp.layers)))
    padding_side = editor.tok.padding_side  # collect pads on the right; the host's evaluation expects its own
    try:
        sums, counts = collect(editor.model, editor.tok, texts, names, last_block, max_tokens=64, batch_size=16)
    finally:
        editor.tok.padding_side = padding_side
    for name, path in statistics_files(vars(hp), hp.stats_dir, model_path).items():
        save(path, sums[name], counts[name], hp.mom2_dtype, hp.mom2_n_samples)


def test_rome_memit_grace_and_baft_in_the_same_loop(model_path, zsre_records, tmp_path):
    from easyeditor import BaseEditor
    from easyeditor.models.memit import memit_main

    summaries = {}
    try:
        for method in ("BaFT", "ROME", "MEMIT", "GRACE"):
            editor = BaseEditor.from_hparams(_hparams(method, model_path, tmp_path / "stats"))
            if method == "MEMIT":
                _write_memit_stats(editor, model_path)
            reference = probe_logits(editor)
            metrics, _, _ = editor.edit(**edit_kwargs(zsre_records[:1], "zsre"), sequential_edit=False, verbose=False)
            assert torch.equal(probe_logits(editor), reference), f"{method}: the host did not restore the model"
            scores = [record_scores(m["post"]) for m in metrics]
            summaries[method] = {key: mean([s[key] for s in scores]) for key in ("rel", "gen", "loc", "port")}
    finally:
        memit_main.COV_CACHE.clear()  # these small-sample statistics must not serve a later MEMIT run
    for method, summary in summaries.items():
        for key in ("rel", "gen", "loc", "port"):
            assert summary[key] is not None and 0.0 <= summary[key] <= 1.0, (method, key, summary)
    assert summaries["BaFT"]["rel"] >= 0.8, summaries["BaFT"]
