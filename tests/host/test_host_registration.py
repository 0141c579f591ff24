"""`import easyedit_baft` makes BaFT a method of the host, in memory, once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from host_testing import REPO_ROOT


def test_alg_dict_seen_by_base_editor():
    import easyeditor.editors.editor as editor_module
    from easyeditor.util import alg_dict

    from easyedit_baft import apply_baft_to_model

    assert alg_dict.ALG_DICT["BaFT"] is apply_baft_to_model
    assert editor_module.ALG_DICT is alg_dict.ALG_DICT  # the star-import shares the dict object


def test_restore_and_batch_registration():
    from easyeditor.editors.batch_editor import BatchEditor
    from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS

    assert "BaFT" in CALLABLE_RESTORE_ALGS
    assert BatchEditor.is_batchable_method("BaFT")
    assert BatchEditor.is_batchable_method("MEMIT")  # the host's own answers are kept
    assert not BatchEditor.is_batchable_method("ROME")


def test_registration_is_idempotent():
    import easyedit_baft
    from easyeditor.editors.batch_editor import BatchEditor
    from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS
    from easyeditor.util.alg_dict import ALG_DICT

    before = (dict(ALG_DICT), set(CALLABLE_RESTORE_ALGS), BatchEditor.is_batchable_method)
    assert easyedit_baft.register_with_host() and easyedit_baft.register_with_host()
    easyedit_baft.host.register_lazily()
    assert (dict(ALG_DICT), set(CALLABLE_RESTORE_ALGS), BatchEditor.is_batchable_method) == before
    original = BatchEditor.is_batchable_method.__wrapped__
    assert not hasattr(original, "__wrapped__")  # wrapped once, not once per call
    assert easyedit_baft.host_available()


def _run(code: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_host_imported_later_is_patched_as_it_loads(tmp_path):
    """A host that becomes importable after `import easyedit_baft` registers BaFT on import."""
    env = {k: v for k, v in os.environ.items() if k not in ("EASYEDIT_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    code = f"""
        import sys
        import easyedit_baft
        assert not easyedit_baft.host_available()
        sys.path.append({os.environ['EASYEDIT_ROOT']!r})
        easyedit_baft.host.register_lazily()
        assert "easyeditor" not in sys.modules  # registering lazily imports nothing
        from easyeditor import BaseEditor
        from easyeditor.editors.batch_editor import BatchEditor
        from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS
        assert easyedit_baft.host.is_registered()
        assert "BaFT" in CALLABLE_RESTORE_ALGS and BatchEditor.is_batchable_method("BaFT")
        print("REGISTERED")
    """
    result = _run(code, env, tmp_path)
    assert "REGISTERED" in result.stdout, result.stderr[-3000:]


def test_without_host_the_package_works_and_logs_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("EASYEDIT_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    code = """
        import logging
        logging.basicConfig(level=logging.INFO)
        import easyedit_baft
        assert not easyedit_baft.host_available()
        assert easyedit_baft.register_with_host() is False
        assert easyedit_baft.register_with_host() is False
        assert callable(easyedit_baft.apply_baft_to_model)
        print("STANDALONE")
    """
    result = _run(code, env, tmp_path)
    assert "STANDALONE" in result.stdout, result.stderr[-3000:]
    assert result.stderr.count("no EasyEdit host") == 1


def test_an_older_host_is_patched_where_its_names_exist(caplog):
    """PyPI's easyeditor 0.0.1.dev0 has ALG_DICT and BatchEditor but no CALLABLE_RESTORE_ALGS."""
    import enum
    import logging
    import types

    from easyedit_baft import apply_baft_to_model, host

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
