"""Paths and helpers shared by the host tests (a module of its own: conftest names can clash)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from easyedit_baft.records import default_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = default_data_dir()
ZSRE_EVAL = DATA_DIR / "zsre" / "zsre_mend_eval_portability_gpt4.json"
COUNTERFACT = DATA_DIR / "counterfact" / "counterfact-edit.json"
KNOWEDIT_ZSRE = DATA_DIR / "knowedit" / "ZsRE" / "ZsRE-test-all.json"
BAFT_YAML = REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml"
EXAMPLES = REPO_ROOT / "examples"

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))  # the examples' record mapping is what these tests feed the host


REQUIRE_HOST_ENV = "EASYEDIT_BAFT_REQUIRE_HOST"


def host_required() -> bool:
    """Set by ./run.sh test-host and CI: a host test that cannot run is a failure, not a skip."""
    return os.environ.get(REQUIRE_HOST_ENV, "") not in ("", "0")


def host_skip_reason() -> Optional[str]:
    root = os.environ.get("EASYEDIT_ROOT")
    if not root:
        return "EASYEDIT_ROOT is unset: set it to the root of an EasyEdit clone to run the host tests"
    import easyedit_baft

    try:
        importlib.import_module("easyeditor")
    except Exception as err:  # any failure of the host's own imports means: no usable host
        return (f"easyeditor does not import (EASYEDIT_ROOT={root}): {err!r}; run ./run.sh test-host, "
                "which builds a venv with the host's requirements")
    if not easyedit_baft.register_with_host():
        return "easyeditor imports but BaFT could not be registered with it; see the log"
    return None


def need_data(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"benchmark file {path} is missing; set EASYEDIT_BAFT_DATA to the shared data folder")
    return path


def baft_hparams(model_path: str, **overrides):
    """The shipped SmolLM2 BaFT config (or a small one) with a bounded step count for CPU tests."""
    from easyedit_baft import BaFTHyperParams

    if BAFT_YAML.is_file():
        hp = BaFTHyperParams.from_hparams(BAFT_YAML)
    else:
        hp = BaFTHyperParams(model_name=model_path, layers=[12], rank=4)
    settings = dict(model_name=model_path, device="cpu", n_steps=min(hp.n_steps, 40),
                    n_locality_prompts=min(hp.n_locality_prompts, 8))
    settings.update(overrides)
    return dataclasses.replace(hp, **settings)


ZSRE_TRAIN = DATA_DIR / "zsre" / "zsre_mend_train-1k.json"
PROBE_PROMPTS = ("The capital of France is", "Who wrote the novel Moby-Dick?")


def probe_logits(editor, prompts=PROBE_PROMPTS):
    """The editor's model's logits on fixed prompts, to compare bit for bit."""
    import torch

    batch = editor.tok(list(prompts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return editor.model(**batch).logits.clone()


def assert_unit_interval(values, where: str) -> None:
    assert isinstance(values, list) and values, f"{where}: {values!r} is not a non-empty list"
    assert all(0.0 <= float(v) <= 1.0 for v in values), f"{where}: {values!r} outside [0, 1]"


def assert_zsre_metrics(metrics, n: int) -> None:
    """Every record has BaFT's post-edit scores under the keys the host's summaries read."""
    assert len(metrics) == n
    for i, record in enumerate(metrics):
        post = record["post"]
        assert_unit_interval(post["rewrite_acc"], f"record {i} rewrite_acc")
        assert_unit_interval(post["rephrase_acc"], f"record {i} rephrase_acc")
        assert_unit_interval(post["locality"]["neighborhood_acc"], f"record {i} locality")
        assert_unit_interval(post["portability"]["one_hop_acc"], f"record {i} portability")
