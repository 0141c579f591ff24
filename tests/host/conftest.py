"""Tests of BaFT inside EasyEdit's own BaseEditor loop, on the embedded SmolLM2 model, on CPU.

Run: EASYEDIT_ROOT=/path/to/EasyEdit python -m pytest tests/host -q
Every test here is skipped, with the reason, when EASYEDIT_ROOT is unset or easyeditor won't import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host_testing import ZSRE_EVAL, host_skip_reason, need_data

HOST_SKIP_REASON = host_skip_reason()


def pytest_collection_modifyitems(config, items):
    if HOST_SKIP_REASON is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=HOST_SKIP_REASON))


@pytest.fixture(scope="session", autouse=True)
def host_working_dir(tmp_path_factory):
    """The host writes logs/ into the working directory: keep it out of the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("host_cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="session")
def model_path() -> str:
    from easyedit_baft.model_loading import embedded_model_dir

    return str(embedded_model_dir())


@pytest.fixture(scope="session")
def zsre_records():
    return json.loads(need_data(ZSRE_EVAL).read_text(encoding="utf-8"))[:3]
