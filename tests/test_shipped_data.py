"""What the package ships so that its defaults work with nothing beside the repository."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from easyedit_baft import records
from easyedit_baft.hparams import BaFTHyperParams
from easyedit_baft.prompt_sources import unrelated_prompts

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / "hparams" / "BaFT").glob("*.yaml"))
SHIPPED_POOL = "package:zsre_train_questions"


def test_every_shipped_config_loads_and_reads_its_prompts_from_the_package():
    assert CONFIGS
    for path in CONFIGS:
        hparams = BaFTHyperParams.from_hparams(path)
        assert hparams.locality_source == SHIPPED_POOL, path.name
        assert "shared" not in path.read_text().split("locality_source:")[1].splitlines()[0]
    assert len(unrelated_prompts(SHIPPED_POOL)) == 1000


def test_the_default_config_and_demo_facts_are_found_without_the_data_folder():
    assert records.shipped_config() == REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml"
    cases = records.load_edit_cases(records.DEMO_FACTS)
    assert len(cases) == 10 and all(c["prompt"] and c["target_new"] and c["locality_prompt"] for c in cases)


def _shared(relative: str) -> Path:
    path = records.default_data_dir() / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent; set EASYEDIT_BAFT_DATA to the benchmark data folder to compare with it")
    return path


def test_the_shipped_pool_is_the_train_split_in_its_order():
    # The same prompts in the same order: the shipped config samples what it was measured with.
    assert unrelated_prompts(SHIPPED_POOL) == unrelated_prompts(str(_shared("zsre/zsre_mend_train-1k.json")))


def test_the_demo_facts_are_the_first_eval_records_unchanged():
    full = json.loads(_shared("zsre/zsre_mend_eval_portability_gpt4.json").read_text(encoding="utf-8"))
    assert json.loads(records.DEMO_FACTS.read_text(encoding="utf-8")) == full[:10]


def test_provenance_names_each_shipped_data_file():
    data = REPO_ROOT / "easyedit_baft" / "data"
    provenance = (data / "PROVENANCE.md").read_text(encoding="utf-8")
    for path in data.iterdir():
        if path.name != "PROVENANCE.md":
            assert f"`{path.name}`" in provenance, path.name
    assert sum(p.stat().st_size for p in data.iterdir()) < 1_000_000


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools")
def test_a_wheel_carries_the_configs_and_the_data(tmp_path):
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "easyedit_baft", source / "easyedit_baft", ignore=ignore)
    shutil.copytree(REPO_ROOT / "hparams" / "BaFT", source / "hparams" / "BaFT")
    for name in ("setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(REPO_ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"easyedit_baft/configs/{p.name}" for p in CONFIGS} <= names
    data = {p.name for p in (REPO_ROOT / "easyedit_baft" / "data").iterdir()}
    assert {f"easyedit_baft/data/{name}" for name in data} <= names
