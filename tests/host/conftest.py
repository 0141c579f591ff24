"""Tests of BaFT inside EasyEdit's own BaseEditor loop, on the embedded SmolLM2 model, on CPU.

Run: ./run.sh test-host (or EASYEDIT_ROOT=/path/to/EasyEdit python -m pytest tests/host -q in a venv
where easyeditor imports). Without a usable host every test here is skipped, with the reason; with
EASYEDIT_BAFT_REQUIRE_HOST=1 (what ./run.sh test-host and CI set) a missing host ends the run as a
failure, and any test that would skip fails instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host_testing import REQUIRE_HOST_ENV, ZSRE_EVAL, host_required, host_skip_reason, need_data

HOST_SKIP_REASON = host_skip_reason()
HERE = Path(__file__).parent


def pytest_configure(config):
    if HOST_SKIP_REASON is not None and host_required():
        pytest.exit(f"{REQUIRE_HOST_ENV}=1, and the host tests cannot run: {HOST_SKIP_REASON}", returncode=1)


def pytest_collection_modifyitems(config, items):
    if HOST_SKIP_REASON is None:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=HOST_SKIP_REASON))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With the host required, a skip (missing data, say) is a failure: CI must not pass on skips."""
    outcome = yield
    report = outcome.get_result()
    if host_required() and report.skipped and HERE in Path(str(item.fspath)).parents:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"this host test skipped, and {REQUIRE_HOST_ENV}=1 forbids that: {reason}"


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
