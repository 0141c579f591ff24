"""Make BaFT a method of the EasyEdit host (the `easyeditor` package) when one is present.

One rule: `import easyedit_baft` imports the host when it is importable and registers BaFT at once;
when it is not, `register_with_host()` (after the host became importable) imports and registers.
The host is found as an importable `easyeditor`, or as a clone whose root EASYEDIT_ROOT names.
The import is not lazy: BaFTHyperParams subclasses the host's HyperParams, and importing
`easyeditor.util.hparams` runs the host's package __init__, which loads all its methods (seconds).

Three host objects learn about BaFT, each changed in memory only (no host file is written):
- easyeditor.util.alg_dict.ALG_DICT gets 'BaFT' -> apply_baft_to_model (BaseEditor looks it up);
- easyeditor.editors.utils.CALLABLE_RESTORE_ALGS gets 'BaFT', so restore_after_edit calls the
  undo callable that apply_baft_to_model returns;
- easyeditor.editors.batch_editor.BatchEditor.is_batchable_method accepts 'BaFT'.
A host that lacks one of them (an older release) is patched where its names exist, with a warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, Optional

LOG = logging.getLogger(__name__)

HOST_PACKAGE = "easyeditor"
ROOT_ENV_VAR = "EASYEDIT_ROOT"
HPARAMS_MODULE = "easyeditor.util.hparams"
ALG_DICT_MODULE = "easyeditor.util.alg_dict"
RESTORE_MODULE = "easyeditor.editors.utils"
BATCH_MODULE = "easyeditor.editors.batch_editor"
_PATCH_MARK = "__baft_patched__"
NO_HOST_MESSAGE = ("no EasyEdit host (easyeditor) found; BaFT works without it. To use BaFT from "
                   "BaseEditor, set %s to the root of an EasyEdit clone")

_logged: set = set()
_import_failed = False  # the last import of the host failed: import_host() does not retry unless asked


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


def import_host(retry: bool = False) -> Optional[ModuleType]:
    """The host package, imported now if needed; None (logged once) when there is none or it fails.

    A failed import is not repeated (it costs seconds each time) unless retry=True.
    """
    global _import_failed
    if HOST_PACKAGE in sys.modules:
        return sys.modules[HOST_PACKAGE]
    if _import_failed and not retry:
        return None
    add_root_from_env()
    try:
        found = importlib.util.find_spec(HOST_PACKAGE) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        _import_failed = True
        _log_once(logging.INFO, NO_HOST_MESSAGE, ROOT_ENV_VAR)
        return None
    try:
        module = importlib.import_module(HOST_PACKAGE)
    except Exception as err:  # any failure of the host's own imports means "no usable host"
        _import_failed = True
        # Drop the host modules that did load, so that a retry starts clean and meets the same error.
        for name in [n for n in sys.modules if n == HOST_PACKAGE or n.startswith(HOST_PACKAGE + ".")]:
            del sys.modules[name]
        _log_once(logging.WARNING, "EasyEdit (easyeditor) was found but does not import (%r); BaFT works "
                  "without it. Install EasyEdit's requirements into this environment "
                  "(docs/HOST_INTEGRATION.md) to use BaFT from BaseEditor", err)
        return None
    _import_failed = False
    return module


def host_available() -> bool:
    """True when the host is imported (`import easyedit_baft` imports it where it can)."""
    return import_host() is not None


def host_hyperparams_class():
    """The host's HyperParams base class, or None without an importable host."""
    if import_host() is None:
        return None
    try:
        return getattr(importlib.import_module(HPARAMS_MODULE), "HyperParams", None)
    except ImportError:  # a host without util/hparams.py: BaFT keeps its stand-in base class
        return None


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
                  "undo after non-sequential edits, so use sequential_edit=True there", module.__name__)
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
    if getattr(original, _PATCH_MARK, False):  # registering twice must not wrap twice
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


def is_registered() -> bool:
    """True when the loaded host's ALG_DICT maps 'BaFT' to apply_baft_to_model."""
    module = sys.modules.get(ALG_DICT_MODULE)
    if module is None:
        return False
    from .baft_main import apply_baft_to_model

    return getattr(module, "ALG_DICT", {}).get(_alg_name()) is apply_baft_to_model


def register_with_host(retry: bool = True) -> bool:
    """Import the host if needed and register BaFT now; True if BaseEditor can now run BaFT.

    Idempotent. `import easyedit_baft` calls it with retry=False; call it again once a host became
    importable (EASYEDIT_ROOT set, or its clone put on sys.path) after that import.
    """
    if import_host(retry=retry) is None:
        return False
    for name, patch in PATCHES.items():
        try:
            module = importlib.import_module(name)
        except Exception as err:  # an older host lacks some modules (PyPI 0.0.1.dev0 has no editors.utils)
            _log_once(logging.WARNING, "host module %s could not be imported (%s)", name, err)
            continue
        patch(module)
    return is_registered()
