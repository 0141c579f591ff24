"""The host (an EasyEdit checkout): imported with BaFT registered, and the functions of its own that score."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from easyedit_baft.metrics import exact_match, fluency_without_punkt, locality_continuations


class HostError(RuntimeError):
    """EasyEdit could not be imported or lacks what the benchmark needs; the message says how to fix it."""


@dataclass
class Host:
    """The host functions a scenario needs, so every definition stays EasyEdit's (tests pass stand-ins)."""

    BaseEditor: object
    compute_edit_quality: object
    finalize_locality_metrics: object
    restore_after_edit: object
    prepare_requests: object
    # The project's generation-based scores, applied to every method alike (metrics.exact_match).
    exact_match: object = exact_match
    locality_continuations: object = locality_continuations

    @staticmethod
    def load() -> "Host":
        """Import easyeditor (EASYEDIT_ROOT first on sys.path when set), register BaFT into it, and take its
        editor, evaluation, request builder and restore."""
        root = os.environ.get("EASYEDIT_ROOT")
        if root:
            if not (Path(root) / "easyeditor").is_dir():
                raise HostError(f"EASYEDIT_ROOT={root!r} has no easyeditor/ folder; point it at an EasyEdit checkout")
            sys.path.insert(0, str(Path(root).resolve()))
        import easyedit_baft

        try:
            import easyeditor  # noqa: F401
        except ImportError as err:
            raise HostError(f"cannot import easyeditor ({err}); set EASYEDIT_ROOT to an EasyEdit checkout (see docs: "
                            "git archive of zjunlp/EasyEdit) and use a venv where its requirements import") from err
        if not easyedit_baft.register_with_host():  # 'BaFT' into ALG_DICT, the restore set and the batch check
            raise HostError("'BaFT' is not in easyeditor's ALG_DICT after registering it; install a version of "
                            "easyedit_baft whose registration covers this EasyEdit (easyedit_baft/host.py)")
        fluency_without_punkt()  # the host's fluency needs NLTK data an offline machine may lack
        from easyeditor.editors.editor import BaseEditor, finalize_locality_metrics
        from easyeditor.editors.utils import _prepare_requests, restore_after_edit
        from easyeditor.evaluate import compute_edit_quality

        return Host(BaseEditor, compute_edit_quality, finalize_locality_metrics, restore_after_edit, _prepare_requests)
