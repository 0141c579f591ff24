"""What the example scripts share: paths, the EasyEdit host, each method's hparams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing easyedit_baft

EXAMPLES_HPARAMS = REPO_ROOT / "examples" / "hparams"
BAFT_HPARAMS = REPO_ROOT / "hparams"
from easyedit_baft.records import default_data_dir  # noqa: E402

DATA_DIR = default_data_dir()
DEFAULT_HPARAMS_NAME = "smollm2-135m"
# The host chooses its model loader by these substrings of model_name (editors/editor.py).
HOST_MODEL_FAMILIES = ("t5", "gpt", "llama", "baichuan", "chatglm", "internlm", "qwen", "mistral")
METHODS = ("BaFT", "ROME", "MEMIT", "GRACE")


def require_host():
    """Import the EasyEdit host with BaFT registered, or exit with what to set."""
    import easyedit_baft

    if not easyedit_baft.register_with_host():
        sys.exit("EasyEdit (easyeditor) is not importable: set EASYEDIT_ROOT to the root of an EasyEdit "
                 "clone, or run from such a clone's root")
    import easyeditor

    return easyeditor


def host_version() -> str:
    """The host clone's git commit where it has one."""
    root = os.environ.get("EASYEDIT_ROOT")
    if root:
        try:
            out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown (EASYEDIT_ROOT is not a git checkout)"


def resolve_model(model: Optional[str]) -> str:
    """A local model directory whose name lets the host pick its loader."""
    from easyedit_baft.model_loading import resolve_model_path

    path = resolve_model_path(model)
    if not any(family in Path(path).name.lower() for family in HOST_MODEL_FAMILIES):
        raise SystemExit(
            f"--model {path!r}: EasyEdit picks its loader by the directory name, which must contain one of "
            f"{list(HOST_MODEL_FAMILIES)}; rename the directory or link it under such a name")
    return path


def resolve_repo_path(path: str) -> Path:
    """Relative paths in the examples' hparams are read from the repository root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def hparams_file(method: str, hparams_dir: Path, name: str) -> Path:
    """hparams_dir/METHOD/NAME.yaml; BaFT falls back to the package's hparams/BaFT/NAME.yaml."""
    candidates = [Path(hparams_dir) / method / f"{name}.yaml"]
    if method == "BaFT":
        candidates.append(BAFT_HPARAMS / method / f"{name}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no hparams for {method}: looked for {[str(p) for p in candidates]}; "
                            "pass --hparams-dir (and --hparams-name) naming an existing file")


def load_hparams(host, method: str, path: Path, model_path: str):
    """The method's hparams object from its YAML, pointed at model_path."""
    from easyedit_baft import BaFTHyperParams

    classes = {"BaFT": BaFTHyperParams, "ROME": host.ROMEHyperParams, "MEMIT": host.MEMITHyperParams,
               "GRACE": host.GraceHyperParams, "FT": host.FTHyperParams, "KN": host.KNHyperParams,
               "LoRA": host.LoRAHyperParams, "IKE": host.IKEHyperParams, "MEND": host.MENDHyperParams,
               "SERAC": host.SERACHparams, "WISE": host.WISEHyperParams}
    if method not in classes:
        raise SystemExit(f"method {method!r} is not supported here; choose from {sorted(classes)}")
    hparams = classes[method].from_hparams(str(path))
    hparams.model_name = model_path
    if hasattr(hparams, "stats_dir"):
        hparams.stats_dir = str(resolve_repo_path(hparams.stats_dir))
    return hparams


def memit_stats_missing(hparams, model_path: str) -> list:
    """The statistics files MEMIT will look for and that do not exist (see memit_stats.py)."""
    from memit_stats import stats_file

    files = [stats_file(Path(hparams.stats_dir), model_path, hparams.mom2_dataset,
                        hparams.rewrite_module_tmp.format(layer), hparams.mom2_dtype, hparams.mom2_n_samples)
             for layer in hparams.layers]
    return [str(f) for f in files if not f.is_file()]


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
