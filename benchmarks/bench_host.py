"""The host (an EasyEdit checkout): imported with BaFT registered, and the functions of its own that score."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from easyedit_baft.metrics import exact_match, fluency_without_punkt, locality_continuations


class HostError(RuntimeError):
    """EasyEdit could not be imported or lacks what the benchmark needs; the message says how to fix it."""


def import_host():
    """Import easyeditor (EASYEDIT_ROOT first on sys.path when set) and register BaFT into it."""
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
        """The imported host's editor, evaluation, request builder and restore."""
        import_host()
        from easyeditor.editors.editor import BaseEditor, finalize_locality_metrics
        from easyeditor.editors.utils import _prepare_requests, restore_after_edit
        from easyeditor.evaluate import compute_edit_quality

        return Host(BaseEditor, compute_edit_quality, finalize_locality_metrics, restore_after_edit, _prepare_requests)


def generate_full_length(model) -> None:
    """Make generate() always produce max_new_tokens: the host scores GRACE by generating len(target) tokens
    and comparing them with the target's, and an EOS first made the shapes differ and numpy raise (ZsRE
    record 67 with SmolLM2). Without an EOS stop the EOS token is kept and simply counts as a wrong token."""
    config = getattr(model, "generation_config", None)
    if config is None:
        raise HostError(f"{type(model).__name__} has no generation_config; cannot turn off its EOS stop")
    config.eos_token_id = None
