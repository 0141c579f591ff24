"""Make BaFT a method of the EasyEdit host (the `easyeditor` package) when one is present.

Three host objects learn about BaFT, each changed in memory only (no host file is written):
- easyeditor.util.alg_dict.ALG_DICT gets 'BaFT' -> apply_baft_to_model (BaseEditor looks it up);
- easyeditor.editors.utils.CALLABLE_RESTORE_ALGS gets 'BaFT', so restore_after_edit calls the
  undo callable that apply_baft_to_model returns;
- easyeditor.editors.batch_editor.BatchEditor.is_batchable_method accepts 'BaFT'.

The host is found as an importable `easyeditor`, or as a clone whose root the EASYEDIT_ROOT
environment variable names. Importing the host takes seconds, so `import easyedit_baft`
never imports it: host modules already loaded are patched at once, the others as they load.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

LOG = logging.getLogger(__name__)

HOST_PACKAGE = "easyeditor"
ROOT_ENV_VAR = "EASYEDIT_ROOT"
ALG_DICT_MODULE = "easyeditor.util.alg_dict"
RESTORE_MODULE = "easyeditor.editors.utils"
BATCH_MODULE = "easyeditor.editors.batch_editor"
_PATCH_MARK = "__baft_patched__"
NO_HOST_MESSAGE = ("no EasyEdit host (easyeditor) found; BaFT works without it. To use BaFT from "
                   "BaseEditor, set %s to the root of an EasyEdit clone")

_logged: set = set()


def _log_once(level: int, message: str, *args) -> None:
    key = (message,) + args
    if key not in _logged:
        _logged.add(key)
        LOG.log(level, message, *args)


def add_root_from_env() -> Optional[Path]:
    """Append $EASYEDIT_ROOT to sys.path (last, so an installed `easyeditor` still wins)."""
    value = os.environ.get(ROOT_ENV_VAR)
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not (root / HOST_PACKAGE).is_dir():
        _log_once(logging.WARNING, "%s=%s has no '%s/' folder; set it to the root of an EasyEdit clone",
                  ROOT_ENV_VAR, value, HOST_PACKAGE)
        return None
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return root


def host_available() -> bool:
    """True when `easyeditor` is imported or importable; never imports it."""
    if HOST_PACKAGE in sys.modules:
        return True
    add_root_from_env()
    try:
        return importlib.util.find_spec(HOST_PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def _alg_name() -> str:
    from .hparams import ALG_NAME

    return ALG_NAME


def _patch_alg_dict(module) -> bool:
    from .baft_main import apply_baft_to_model

    alg_dict = getattr(module, "ALG_DICT", None)
    if not isinstance(alg_dict, dict):
        _log_once(logging.WARNING, "%s has no ALG_DICT dict; BaFT cannot be registered with this host",
                  module.__name__)
        return False
    current = alg_dict.get(_alg_name())
    if current is not None and current is not apply_baft_to_model:
        _log_once(logging.WARNING, "host ALG_DICT[%r] was %r; replaced by easyedit_baft's apply_baft_to_model",
                  _alg_name(), current)
    alg_dict[_alg_name()] = apply_baft_to_model  # the same dict object editor.py star-imported
    return True


def _patch_restore_set(module) -> bool:
    restore_set = getattr(module, "CALLABLE_RESTORE_ALGS", None)
    if not isinstance(restore_set, set):
        _log_once(logging.WARNING, "%s has no CALLABLE_RESTORE_ALGS set; this host will not call BaFT's "
                  "undo after non-sequential edits", module.__name__)
        return False
    restore_set.add(_alg_name())
    return True


def _patch_batchable(module) -> bool:
    batch_editor = getattr(module, "BatchEditor", None)
    original = getattr(batch_editor, "is_batchable_method", None)
    if original is None:
        _log_once(logging.WARNING, "%s has no BatchEditor.is_batchable_method; batch_edit will refuse BaFT",
                  module.__name__)
        return False
    if getattr(original, _PATCH_MARK, False):
        return True
    alg_name = _alg_name()

    def is_batchable_method(name: str) -> bool:
        return name == alg_name or original(name)

    is_batchable_method.__wrapped__ = original
    setattr(is_batchable_method, _PATCH_MARK, True)
    # BatchEditor is an Enum: a non-member attribute may be set on the class.
    batch_editor.is_batchable_method = staticmethod(is_batchable_method)
    return True


PATCHES: Dict[str, Callable] = {
    ALG_DICT_MODULE: _patch_alg_dict,
    RESTORE_MODULE: _patch_restore_set,
    BATCH_MODULE: _patch_batchable,
}


class _PatchAfterExec(importlib.abc.Loader):
    """Runs a host module's own loader, then patches the module it made."""

    def __init__(self, loader, patch: Callable):
        self._loader, self._patch = loader, patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception as err:  # registration must never break the host's own import
            _log_once(logging.WARNING, "BaFT registration on %s failed: %r", module.__name__, err)

    def __getattr__(self, name):  # get_source, get_filename, ...: tracebacks still show host code
        return getattr(self._loader, name)


class _HostImportWatcher(importlib.abc.MetaPathFinder):
    """Patches the three host modules when they are imported after easyedit_baft."""

    def find_spec(self, fullname, path, target=None):
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchAfterExec(spec.loader, patch)
        return spec


def _watch_host_imports() -> None:
    if not any(isinstance(finder, _HostImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HostImportWatcher())


def is_registered() -> bool:
    """True when the loaded host's ALG_DICT maps 'BaFT' to apply_baft_to_model."""
    module = sys.modules.get(ALG_DICT_MODULE)
    if module is None:
        return False
    from .baft_main import apply_baft_to_model

    return getattr(module, "ALG_DICT", {}).get(_alg_name()) is apply_baft_to_model


def register_lazily() -> None:
    """Patch host modules already loaded; patch the rest when they load. Imports nothing."""
    if not host_available():
        _log_once(logging.INFO, NO_HOST_MESSAGE, ROOT_ENV_VAR)
        return
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    _watch_host_imports()


def register_with_host() -> bool:
    """Import the host if needed and register BaFT now; True if BaseEditor can now run BaFT."""
    if not host_available():
        _log_once(logging.INFO, NO_HOST_MESSAGE, ROOT_ENV_VAR)
        return False
    _watch_host_imports()
    for name, patch in PATCHES.items():
        try:
            module = importlib.import_module(name)
        except Exception as err:  # an older host lacks some modules (PyPI 0.0.1.dev0 has no editors.utils)
            _log_once(logging.WARNING, "host module %s could not be imported (%s)", name, err)
            continue
        patch(module)  # idempotent, and a no-op when the import watcher already patched it
    return is_registered()
