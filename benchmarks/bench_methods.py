"""The compared methods: how each one's hparams are built, and what each edit costs in parameters and bytes."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MethodSpec:
    name: str  # as shown in the tables
    alg_name: str  # the host's ALG_DICT key
    hparams_key: str  # which hparams file it reads: 'BaFT' or a host method folder name
    baft_overrides: Dict[str, object] = field(default_factory=dict)  # BaFT ablations
    optional: bool = False  # run only when named in --methods
    batchable: bool = False  # the host's batch check admits it
    takes_loc_prompts: bool = False  # trains on unrelated prompts passed as loc_prompt (WISE)


METHODS: Dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec("BaFT", "BaFT", "BaFT", batchable=True),
        # ReFT is BaFT with every basis always on: the paper's ablation.
        MethodSpec("ReFT", "BaFT", "BaFT", {"gate": "ones"}, batchable=True),
        MethodSpec("BaFT-noLB", "BaFT", "BaFT", {"lambda_lb": 0.0}, batchable=True),
        MethodSpec("ROME", "ROME", "ROME"),
        MethodSpec("MEMIT", "MEMIT", "MEMIT", batchable=True),
        MethodSpec("GRACE", "GRACE", "GRACE"),
        MethodSpec("FT-L", "FT", "FT", optional=True, batchable=True),
        MethodSpec("LoRA", "LoRA", "LoRA", optional=True, batchable=True),
        MethodSpec("WISE", "WISE", "WISE", optional=True, takes_loc_prompts=True),
        MethodSpec("AlphaEdit", "AlphaEdit", "AlphaEdit", optional=True),
    ]
}
DEFAULT_METHODS = [name for name, spec in METHODS.items() if not spec.optional]


def hparams_class(alg_name: str):
    """The host's (or BaFT's) hyper-parameter class for an algorithm."""
    if alg_name == "BaFT":
        from easyedit_baft.hparams import BaFTHyperParams

        return BaFTHyperParams
    import easyeditor

    names = {
        "ROME": "ROMEHyperParams",
        "MEMIT": "MEMITHyperParams",
        "GRACE": "GraceHyperParams",
        "FT": "FTHyperParams",
        "LoRA": "LoRAHyperParams",
        "WISE": "WISEHyperParams",
        "AlphaEdit": "AlphaEditHyperParams",
    }
    return getattr(easyeditor, names[alg_name])


def load_hparams(spec: MethodSpec, path: Path, model_dir: str, stats_dir: Optional[Path], batch_size: int = 1):
    """Read the method's hparams file and point it at the benchmark's model, CPU and stats."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec.name}: hparams file {path} does not exist; pass --hparams {spec.name}=PATH "
            f"(or --baft-hparams / --hparams-dir)"
        )
    hparams = hparams_class(spec.alg_name).from_hparams(str(path))
    if spec.baft_overrides:
        hparams = dataclasses.replace(hparams, **spec.baft_overrides)  # re-validated by __post_init__
    hparams.model_name = model_dir
    hparams.device = "cpu"
    if hasattr(hparams, "batch_size"):
        hparams.batch_size = batch_size
    if stats_dir is not None and hasattr(hparams, "stats_dir"):
        hparams.stats_dir = str(stats_dir)
    # AlphaEdit's cached projection is read from the repository root, like stats_dir (the workers run
    # in a scratch directory). BaFT reads a relative locality_source from its YAML file's folder.
    value = getattr(hparams, "P_loc", None)
    if isinstance(value, str) and not Path(value).expanduser().is_absolute():
        hparams.P_loc = str(REPO_ROOT / value)
    return hparams


# ---- what one edit trains or changes -------------------------------------------------------


def _baft_state(model):
    from easyedit_baft.layers import get_state

    return get_state(model)


def baft_trainable_parameters(model) -> int:
    state = _baft_state(model)
    return sum(iv.num_parameters() for iv in state.interventions.values()) if state else 0


def baft_edit_bytes(model) -> int:
    """Bytes of the saved interventions (edits.safetensors), or of their tensors if saving is unavailable."""
    state = _baft_state(model)
    if state is None:
        return 0
    try:
        from easyedit_baft.artifacts import save_edits
    except ImportError:
        save_edits = None
    if save_edits is not None:
        with tempfile.TemporaryDirectory() as tmp:
            save_edits(model, tmp)
            return (Path(tmp) / "edits.safetensors").stat().st_size
    return sum(t.numel() * t.element_size() for iv in state.interventions.values() for t in iv.state_dict().values())


def grace_adapters(model) -> List[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "GRACEAdapter"]


def grace_codebook_tensors(model) -> List[torch.Tensor]:
    """Keys, values and radii of every GRACE codebook in the model."""
    tensors = [getattr(adapter, name, None) for adapter in grace_adapters(model)
               for name in ("keys", "values", "epsilons")]
    return [t for t in tensors if isinstance(t, torch.Tensor)]


def grace_codebook_elements(model) -> int:
    return sum(t.numel() for t in grace_codebook_tensors(model))


def grace_codebook_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in grace_codebook_tensors(model))


def wise_side_memory(model) -> List[torch.Tensor]:
    """WISE's side memories: the weight being trained and the ones kept from earlier edits."""
    tensors = []
    for adapter in (m for m in model.modules() if type(m).__name__ == "WISEAdapter"):
        tensors.append(adapter.new_weight)
        tensors.extend(getattr(adapter, "memory_weight", None) or [])
    return tensors


def wise_trained_parameters(model) -> int:
    adapters = [m for m in model.modules() if type(m).__name__ == "WISEAdapter"]
    return sum(a.new_weight.numel() for a in adapters)


def lora_trainable_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def lora_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)


def tensor_dict_elements(weights_copy) -> int:
    if not isinstance(weights_copy, dict):
        return 0
    return sum(v.numel() for v in weights_copy.values() if isinstance(v, torch.Tensor))


def changed_tensor_bytes(model, names) -> int:
    """Bytes of the model's current tensors with these names (what must be stored to ship the edit)."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() * params[n].element_size() for n in names if n in params)


class CostMeter:
    """Tracks, over one scenario, how many parameters each edit trains or changes, and the edit's size."""

    def __init__(self, spec: MethodSpec):
        self.spec = spec
        self.per_edit_params: List[int] = []
        self.changed_names: set = set()  # weight-editing methods: names of tensors changed so far

    def after_edit(self, model, weights_copy, n_requests: int) -> None:
        alg = self.spec.alg_name
        if alg == "BaFT":
            count = baft_trainable_parameters(model)
        elif alg == "GRACE":
            count = None  # codebook growth is read at the end of the scenario
        elif alg == "LoRA":
            count = lora_trainable_parameters(model)
        elif alg == "WISE":
            count = wise_trained_parameters(model)
        else:
            count = tensor_dict_elements(weights_copy)
            if isinstance(weights_copy, dict):
                self.changed_names.update(weights_copy)
        if count is not None:
            self.per_edit_params.extend([count / n_requests] * n_requests)

    def summary(self, model, n_edits: int) -> dict:
        """params_per_edit and edit_bytes for the model as the scenario leaves it."""
        alg = self.spec.alg_name
        if alg == "GRACE":
            elements = grace_codebook_elements(model)
            return {"params_per_edit": elements / max(n_edits, 1), "edit_bytes": grace_codebook_bytes(model),
                    "codebook_elements": elements}
        if alg == "BaFT":
            size = baft_edit_bytes(model)
        elif alg == "LoRA":
            size = lora_bytes(model)
        elif alg == "WISE":
            size = sum(t.numel() * t.element_size() for t in wise_side_memory(model))
        else:
            size = changed_tensor_bytes(model, self.changed_names)
        mean = sum(self.per_edit_params) / len(self.per_edit_params) if self.per_edit_params else None
        return {"params_per_edit": mean, "edit_bytes": size}
