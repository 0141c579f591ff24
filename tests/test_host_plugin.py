"""The host registration's rules, without a real EasyEdit: no host, a broken one, an older one, and a
stand-in `easyeditor` with just the names registration touches (tests/host runs the real one)."""

from __future__ import annotations

import enum
import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

from easyedit_baft import apply_baft_to_model, host

REPO_ROOT = Path(__file__).resolve().parents[1]

# The four host modules registration reads, as upstream EasyEdit 14cea82 spells them.
STAND_IN_HOST = {
    "__init__.py": "from .util.alg_dict import ALG_DICT\nfrom .editors.utils import CALLABLE_RESTORE_ALGS\n",
    "util/__init__.py": "",
    "util/hparams.py": textwrap.dedent("""
        from dataclasses import asdict, dataclass

        @dataclass
        class HyperParams:
            def to_dict(config) -> dict:
                return asdict(config)
    """),
    "util/alg_dict.py": "ALG_DICT = {'ROME': object()}\n",
    "editors/__init__.py": "",
    "editors/utils.py": "CALLABLE_RESTORE_ALGS = {'GRACE'}\n",
    "editors/batch_editor.py": textwrap.dedent("""
        from enum import Enum

        class BatchEditor(Enum):
            MEMIT = 'MEMIT'

            @staticmethod
            def is_batchable_method(alg_name: str):
                return alg_name == BatchEditor.MEMIT.value
    """),
}


def _write_host(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / "easyeditor" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _run(code: str, tmp_path: Path, easyedit_root=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EASYEDIT_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if easyedit_root is not None:
        env["EASYEDIT_ROOT"] = str(easyedit_root)
    prelude = "import logging\nlogging.basicConfig(level=logging.INFO)\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_without_host_the_package_works_and_logs_once(tmp_path):
    code = """
        import easyedit_baft
        assert not easyedit_baft.host_available()
        assert easyedit_baft.register_with_host() is False
        assert easyedit_baft.register_with_host() is False
        assert callable(easyedit_baft.apply_baft_to_model)
        print("STANDALONE")
    """
    result = _run(code, tmp_path)
    assert "STANDALONE" in result.stdout, result.stderr[-3000:]
    assert result.stderr.count("no EasyEdit host") == 1


def test_an_importable_host_is_registered_at_import(tmp_path):
    root = _write_host(tmp_path / "EasyEdit", STAND_IN_HOST)
    code = """
        import sys
        import easyedit_baft
        assert "easyeditor" in sys.modules  # the import of easyedit_baft imported it
        from easyeditor import ALG_DICT, CALLABLE_RESTORE_ALGS
        from easyeditor.editors.batch_editor import BatchEditor
        from easyeditor.util.hparams import HyperParams
        assert ALG_DICT["BaFT"] is easyedit_baft.apply_baft_to_model and "ROME" in ALG_DICT
        assert CALLABLE_RESTORE_ALGS == {"GRACE", "BaFT"}
        assert BatchEditor.is_batchable_method("BaFT") and BatchEditor.is_batchable_method("MEMIT")
        assert not BatchEditor.is_batchable_method("ROME")
        assert issubclass(easyedit_baft.BaFTHyperParams, HyperParams)
        assert easyedit_baft.host_available()
        assert easyedit_baft.register_with_host() and easyedit_baft.register_with_host()
        assert not hasattr(BatchEditor.is_batchable_method.__wrapped__, "__wrapped__")  # wrapped once
        print("REGISTERED")
    """
    result = _run(code, tmp_path, easyedit_root=root)
    assert "REGISTERED" in result.stdout, result.stderr[-3000:]


def test_a_host_found_after_import_registers_at_register_with_host(tmp_path):
    root = _write_host(tmp_path / "EasyEdit", STAND_IN_HOST)
    code = f"""
        import sys
        import easyedit_baft
        assert not easyedit_baft.host_available()
        sys.path.append({str(root)!r})
        assert "easyeditor" not in sys.modules
        assert easyedit_baft.register_with_host()
        from easyeditor import ALG_DICT, CALLABLE_RESTORE_ALGS
        assert ALG_DICT["BaFT"] is easyedit_baft.apply_baft_to_model and "BaFT" in CALLABLE_RESTORE_ALGS
        print("REGISTERED")
    """
    result = _run(code, tmp_path)
    assert "REGISTERED" in result.stdout, result.stderr[-3000:]


def test_a_host_that_fails_to_import_is_named_once_and_the_package_works(tmp_path):
    broken = dict(STAND_IN_HOST, **{"__init__.py": "import a_module_this_host_needs_but_lacks\n"})
    root = _write_host(tmp_path / "EasyEdit", broken)
    code = """
        import easyedit_baft
        assert not easyedit_baft.host_available() and not easyedit_baft.host_available()
        assert callable(easyedit_baft.apply_baft_to_model)
        print("STANDALONE")
    """
    result = _run(code, tmp_path, easyedit_root=root)
    assert "STANDALONE" in result.stdout, result.stderr[-3000:]
    assert result.stderr.count("does not import") == 1, result.stderr[-3000:]
    assert "a_module_this_host_needs_but_lacks" in result.stderr


def test_a_root_without_easyeditor_says_what_to_set(tmp_path):
    result = _run("import easyedit_baft\nprint('STANDALONE')\n", tmp_path, easyedit_root=tmp_path)
    assert "STANDALONE" in result.stdout, result.stderr[-3000:]
    assert "EASYEDIT_ROOT" in result.stderr and "has no 'easyeditor/' folder" in result.stderr


def test_an_older_host_is_patched_where_its_names_exist(caplog):
    """PyPI's easyeditor 0.0.1.dev0 has ALG_DICT and BatchEditor but no CALLABLE_RESTORE_ALGS."""
    alg_dict = types.ModuleType("old.util.alg_dict")
    alg_dict.ALG_DICT = {"ROME": object()}

    class BatchEditor(enum.Enum):
        MEMIT = "MEMIT"

        @staticmethod
        def is_batchable_method(alg_name):
            return alg_name == BatchEditor.MEMIT.value

    batch_editor = types.ModuleType("old.editors.batch_editor")
    batch_editor.BatchEditor = BatchEditor
    editors = types.ModuleType("old.editors")  # no CALLABLE_RESTORE_ALGS there

    assert host.PATCHES[host.ALG_DICT_MODULE](alg_dict)
    assert alg_dict.ALG_DICT["BaFT"] is apply_baft_to_model and "ROME" in alg_dict.ALG_DICT
    assert host.PATCHES[host.BATCH_MODULE](batch_editor)
    assert BatchEditor.is_batchable_method("BaFT") and BatchEditor.is_batchable_method("MEMIT")
    with caplog.at_level(logging.WARNING, logger=host.LOG.name):
        assert host.PATCHES[host.RESTORE_MODULE](editors) is False
    assert "CALLABLE_RESTORE_ALGS" in caplog.text
