"""The host's datasets feed BaFT unchanged; ROME and GRACE run in the same loop as BaFT."""

from __future__ import annotations

import pytest
import torch

from edit_inputs import detect_format, edit_kwargs
from edit_metrics import summarize
from host_testing import (COUNTERFACT, EXAMPLES, KNOWEDIT_ZSRE, ZSRE_EVAL, baft_hparams, need_data,
                          probe_logits)

from easyedit_baft.layers import get_state


@pytest.fixture(scope="module")
def baft_editor(model_path):
    from easyeditor import BaseEditor

    return BaseEditor.from_hparams(baft_hparams(model_path))


@pytest.mark.parametrize("dataset, path, fmt", [
    ("ZsreDataset", ZSRE_EVAL, "counterfact"),
    ("CounterFactDataset", COUNTERFACT, "counterfact"),
    ("KnowEditDataset", KNOWEDIT_ZSRE, "knowedit"),
])
def test_host_dataset_feeds_baft(baft_editor, dataset, path, fmt):
    import easyeditor

    items = list(getattr(easyeditor, dataset)(str(need_data(path)), size=1))
    assert detect_format(items[0]) == fmt
    metrics, _, _ = baft_editor.edit(**edit_kwargs(items), sequential_edit=False, verbose=False)

    post = metrics[0]["post"]
    assert 0.0 <= post["rewrite_acc"][0] <= 1.0
    assert post["rewrite_acc"][0] > metrics[0]["pre"]["rewrite_acc"][0]
    assert post["locality"], "the dataset's locality prompts were scored"
    assert get_state(baft_editor.model) is None


def _hparams(method: str, model_path: str):
    from easyeditor import GraceHyperParams, ROMEHyperParams

    if method == "BaFT":
        return baft_hparams(model_path)
    cls = {"ROME": ROMEHyperParams, "GRACE": GraceHyperParams}[method]
    hparams = cls.from_hparams(str(EXAMPLES / "hparams" / method / "smollm2-135m.yaml"))
    hparams.model_name = model_path
    if method == "ROME":  # fewer optimisation steps and context templates: the same code, less CPU time
        hparams.v_num_grad_steps, hparams.context_template_length_params = 10, [[5, 5]]  # the fewest templates: one per seed word
    return hparams


def test_rome_grace_and_baft_in_the_same_loop(model_path, zsre_records):
    from easyeditor import BaseEditor

    summaries = {}
    for method in ("BaFT", "ROME", "GRACE"):
        editor = BaseEditor.from_hparams(_hparams(method, model_path))
        reference = probe_logits(editor)
        metrics, _, _ = editor.edit(**edit_kwargs(zsre_records[:1], "zsre"), sequential_edit=False, verbose=False)
        assert torch.equal(probe_logits(editor), reference), f"{method}: the host did not restore the model"
        summaries[method] = summarize(metrics)
    for method, summary in summaries.items():
        for key in ("reliability", "generalization", "locality", "portability"):
            assert summary[key] is not None and 0.0 <= summary[key] <= 1.0, (method, key, summary)
