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
    assert (dict(ALG_DICT), set(CALLABLE_RESTORE_ALGS), BatchEditor.is_batchable_method) == before
    original = BatchEditor.is_batchable_method.__wrapped__
    assert not hasattr(original, "__wrapped__")  # wrapped once, not once per call
    assert easyedit_baft.host_available()


def test_base_class_is_the_hosts():
    from easyeditor.util.hparams import HyperParams

    from easyedit_baft import BaFTHyperParams

    assert issubclass(BaFTHyperParams, HyperParams)


def _run(code: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _env_without_host() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("EASYEDIT_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def test_import_registers_at_once_when_the_host_is_importable(tmp_path):
    """The documented rule, in a fresh interpreter: `import easyedit_baft` imports the host and registers."""
    env = _env_without_host()
    env["EASYEDIT_ROOT"] = os.environ["EASYEDIT_ROOT"]
    code = """
        import sys
        import easyedit_baft
        assert "easyeditor" in sys.modules  # imported by easyedit_baft, not by this script
        from easyeditor.editors.batch_editor import BatchEditor
        from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS
        assert easyedit_baft.host.is_registered()
        assert "BaFT" in CALLABLE_RESTORE_ALGS and BatchEditor.is_batchable_method("BaFT")
        print("REGISTERED")
    """
    result = _run(code, env, tmp_path)
    assert "REGISTERED" in result.stdout, result.stderr[-3000:]


def test_a_host_found_after_import_registers_at_register_with_host(tmp_path):
    code = f"""
        import sys
        import easyedit_baft
        assert not easyedit_baft.host_available() and "easyeditor" not in sys.modules
        sys.path.append({os.environ['EASYEDIT_ROOT']!r})
        assert easyedit_baft.register_with_host()
        from easyeditor.editors.batch_editor import BatchEditor
        from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS
        assert "BaFT" in CALLABLE_RESTORE_ALGS and BatchEditor.is_batchable_method("BaFT")
        assert easyedit_baft.host_available()
        print("REGISTERED")
    """
    result = _run(code, _env_without_host(), tmp_path)
    assert "REGISTERED" in result.stdout, result.stderr[-3000:]
