"""The compared methods: one adapter per host algorithm holds everything the runner knows of it
(its hparams class, how its edited model is unwrapped, what an edit trains and stores, how its edited
state is saved between edits); nowhere else does the runner test a method's name."""

import dataclasses
import importlib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from easyedit_baft.artifacts import load_edits, save_edits
from easyedit_baft.hparams import BaFTHyperParams
from easyedit_baft.layers import get_state
from easyedit_baft.metrics import mean

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a GRACE adapter learns and later edits and scoring read; the rest is rebuilt from hparams.
GRACE_CODEBOOK_FIELDS = ("keys", "values", "epsilons", "key_labels", "edit_ids", "key_id", "edit_label",
                         "edit_id", "chosen_key", "iter")


def _modules_named(model, class_name: str) -> List[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == class_name]


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _baft_parameters(model, weights_copy) -> int:
    state = get_state(model)
    return sum(iv.num_parameters() for iv in state.interventions.values()) if state else 0


def _baft_bytes(model, changed_names) -> int:
    """Bytes of the saved interventions (edits.safetensors): what a user ships."""
    if get_state(model) is None:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        save_edits(model, tmp)
        return (Path(tmp) / "edits.safetensors").stat().st_size


def _changed_elements(model, weights_copy) -> int:
    """An in-place weight editor: the elements of the tensors it returned as changed."""
    tensors = weights_copy.values() if isinstance(weights_copy, dict) else []
    return sum(v.numel() for v in tensors if isinstance(v, torch.Tensor))


def _changed_bytes(model, changed_names) -> int:
    return _nbytes(p for name, p in model.named_parameters() if name in changed_names)


def _save_weights(model, directory: Path, changed_names) -> None:
    params = dict(model.named_parameters())
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: params[name].detach().contiguous() for name in sorted(changed_names)},
              str(directory / "weights.safetensors"))


def _restore_weights(model, directory: Path, hparams) -> None:
    # Only the changed weights are saved: the others are missing from them, as they should be.
    unexpected = model.load_state_dict(load_file(str(directory / "weights.safetensors")), strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"saved state {directory} holds weights the model lacks: {unexpected[:3]}; "
                         "delete it to start over")


def _lora(model) -> List[torch.Tensor]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def _wise_memory(model) -> List[torch.Tensor]:
    """WISE's side memories: the weight being trained and the ones kept from earlier edits."""
    return [t for a in _modules_named(model, "WISEAdapter")
            for t in [a.new_weight, *(getattr(a, "memory_weight", None) or [])]]


def _grace_codebook(model) -> List[torch.Tensor]:
    tensors = [getattr(a, name, None) for a in _modules_named(model, "GRACEAdapter")
               for name in ("keys", "values", "epsilons")]
    return [t for t in tensors if isinstance(t, torch.Tensor)]


def _save_grace(model, directory: Path, changed_names) -> None:
    [adapter] = _modules_named(model, "GRACEAdapter")  # the host puts one in the edited layer
    codebook = {name: getattr(adapter, name) for name in GRACE_CODEBOOK_FIELDS if hasattr(adapter, name)}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach() if torch.is_tensor(v) else v for k, v in codebook.items()}, directory / "codebook.pt")


def _restore_grace(model, directory: Path, hparams) -> None:
    from easyeditor.models.grace.GRACE import GRACE

    GRACE(config=hparams, model=model, device=hparams.device)  # puts the (empty) adapter in its layer
    [adapter] = _modules_named(model, "GRACEAdapter")
    for name, value in torch.load(directory / "codebook.pt").items():
        # values is trained at every edit: the host keeps it as a Parameter.
        setattr(adapter, name, torch.nn.Parameter(value, requires_grad=True) if name == "values" else value)


def _grace_as_host_returns(editor):
    """A restored GRACE codebook sits in the bare model; the host scores GRACE through its wrapper,
    whose generate() re-reads the key at each prompt's last token (the bare model would keep a stale one)."""
    if not _modules_named(editor.model, "GRACEAdapter"):
        return editor.model
    from easyeditor.models.grace.GRACE import GRACE

    return GRACE(config=editor.hparams, model=editor.model, device=editor.hparams.device)


@dataclass(frozen=True)
class Adapter:
    alg_name: str  # the host's ALG_DICT key
    hparams_class: str  # its class in easyeditor ('' for BaFT, which is this package's)
    trained: Optional[Callable]  # (model, weights_copy) -> parameters one call trained or changed
    stored: Callable  # (model, changed_names) -> bytes the edits so far take to ship
    save: Optional[Callable] = None  # (model, directory, changed_names): the edited state, between edits
    restore: Optional[Callable] = None  # (model, directory, hparams), onto a freshly loaded model
    wrapped: bool = False  # the edit returns a wrapper whose .model is the model (GRACE, WISE)
    keeps_returned_model: bool = False  # the host's sequential mode keeps the returned wrapper (LoRA's PEFT)
    scored_by_generation: bool = False  # the host generates the answer instead of teacher forcing (GRACE)
    context_templates_module: str = ""  # host module whose CONTEXT_TEMPLATES_CACHE later edits reuse
    # (editor) -> the edited model in the form an edit call returns it, for a sequence restored from disk
    as_host_returns: Callable = lambda editor: editor.model
    grown: Optional[Callable] = None  # without `trained`: (model) -> elements the edits so far added

    def hparams_type(self):
        if not self.hparams_class:
            return BaFTHyperParams
        return getattr(importlib.import_module("easyeditor"), self.hparams_class)

    def unwrap(self, edited_model):
        return getattr(edited_model, "model", edited_model) if self.wrapped else edited_model

    def context_templates(self):
        # The host module is loaded once the method has edited; if it is not, there is nothing to keep.
        return getattr(sys.modules.get(self.context_templates_module or "", None), "CONTEXT_TEMPLATES_CACHE", None)

    def set_context_templates(self, templates) -> None:
        if self.context_templates_module and templates is not None:
            setattr(importlib.import_module(self.context_templates_module), "CONTEXT_TEMPLATES_CACHE", templates)


_WEIGHTS = dict(trained=_changed_elements, stored=_changed_bytes, save=_save_weights, restore=_restore_weights)
ADAPTERS: Dict[str, Adapter] = {a.alg_name: a for a in [
    Adapter("BaFT", "", _baft_parameters, _baft_bytes, lambda model, directory, names: save_edits(model, directory),
            lambda model, directory, hparams: load_edits(model, directory)),
    Adapter("ROME", "ROMEHyperParams", **_WEIGHTS, context_templates_module="easyeditor.models.rome.rome_main"),
    Adapter("MEMIT", "MEMITHyperParams", **_WEIGHTS, context_templates_module="easyeditor.models.memit.memit_main"),
    Adapter("FT", "FTHyperParams", **_WEIGHTS),
    # AlphaEdit keeps a projection cache in host objects this does not reach: its sequences start over.
    Adapter("AlphaEdit", "AlphaEditHyperParams", _changed_elements, _changed_bytes),
    Adapter("GRACE", "GraceHyperParams", None, lambda model, names: _nbytes(_grace_codebook(model)),
            _save_grace, _restore_grace, wrapped=True, scored_by_generation=True,
            as_host_returns=_grace_as_host_returns, grown=lambda model: sum(t.numel() for t in _grace_codebook(model))),
    # UltraEdit's lifelong normalisation statistics live in its executor: its sequences start over.
    Adapter("ULTRAEDIT", "UltraEditHyperParams", _changed_elements, _changed_bytes),
    Adapter("LoRA", "LoRAHyperParams", lambda model, copy: sum(p.numel() for p in _lora(model)),
            lambda model, names: _nbytes(_lora(model)), keeps_returned_model=True),
    Adapter("WISE", "WISEHyperParams",
            lambda model, copy: sum(a.new_weight.numel() for a in _modules_named(model, "WISEAdapter")),
            lambda model, names: _nbytes(_wise_memory(model)), wrapped=True),
]}


@dataclass(frozen=True)
class MethodSpec:
    name: str  # as shown in the tables
    alg_name: str  # its adapter (ADAPTERS), and the folder of its hparams files
    overrides: Dict[str, object] = field(default_factory=dict)  # fields changed in the adapter's hparams file
    optional: bool = False  # run only when named in --methods
    batchable: bool = False  # the host's batch check admits it
    takes_loc_prompts: bool = False  # trains on unrelated prompts passed as loc_prompt (WISE)

    @property
    def adapter(self) -> Adapter:
        return ADAPTERS[self.alg_name]


METHODS: Dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("BaFT", "BaFT", batchable=True),
    # ReFT is BaFT with every basis always on: the paper's ablation.
    MethodSpec("ReFT", "BaFT", {"gate": "ones"}, batchable=True),
    MethodSpec("BaFT-noLB", "BaFT", {"lambda_lb": 0.0}, batchable=True),
    MethodSpec("ROME", "ROME"),
    MethodSpec("MEMIT", "MEMIT", batchable=True),
    MethodSpec("GRACE", "GRACE"),
    MethodSpec("FT-L", "FT", optional=True, batchable=True),
    MethodSpec("FT-M", "FT", {"objective_optimization": "target_new"}, optional=True, batchable=True),
    MethodSpec("LoRA", "LoRA", optional=True, batchable=True),
    MethodSpec("WISE", "WISE", optional=True, takes_loc_prompts=True),
    MethodSpec("AlphaEdit", "AlphaEdit", optional=True, batchable=True),
    MethodSpec("ULTRAEDIT", "ULTRAEDIT", optional=True, batchable=True)]}
DEFAULT_METHODS = [name for name, spec in METHODS.items() if not spec.optional]


def hparams_file(spec: MethodSpec, name: str, baft_hparams: Optional[Path] = None,
                 hparams_dir: Path = REPO_ROOT / "examples" / "hparams") -> Path:
    """The method's hparams file: BaFT's (hparams/BaFT/NAME.yaml unless given), the host methods'
    HPARAMS_DIR/ALG/NAME.yaml or, for the optional ones not there, benchmarks/hparams/ALG/NAME.yaml."""
    if spec.alg_name == "BaFT":
        return Path(baft_hparams or REPO_ROOT / "hparams" / "BaFT" / f"{name}.yaml").resolve()
    candidates = [folder / spec.alg_name / f"{name}.yaml" for folder in (hparams_dir, REPO_ROOT / "benchmarks/hparams")]
    return next((path for path in candidates if path.is_file()), candidates[0]).resolve()


def load_hparams(spec: MethodSpec, path: Path, model_dir: str, stats_dir: Optional[Path], batch_size: int = 1):
    """Read the method's hparams file and point it at the benchmark's model, CPU and stats."""
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name}: hparams file {path} does not exist; pass --hparams {spec.name}=PATH "
                                "(or --baft-hparams / --hparams-dir)")
    hparams = spec.adapter.hparams_type().from_hparams(str(path))
    if spec.overrides:
        hparams = dataclasses.replace(hparams, **spec.overrides)  # re-validated by __post_init__
    hparams.model_name, hparams.device = model_dir, "cpu"
    if hasattr(hparams, "batch_size"):
        hparams.batch_size = batch_size
    if stats_dir is not None and hasattr(hparams, "stats_dir"):
        hparams.stats_dir = str(stats_dir)
    # Relative statistics and AlphaEdit's cached projection are read from the repository root (the
    # workers run in a scratch directory). BaFT reads a relative locality_source from its YAML's folder.
    for name in ("stats_dir", "P_loc"):
        value = getattr(hparams, name, None)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            setattr(hparams, name, str((REPO_ROOT / value).resolve()))
    return hparams


class CostMeter:
    """Tracks, over one scenario, how many parameters each edit trains or changes, and the edits' size."""

    def __init__(self, spec: MethodSpec):
        self.adapter = spec.adapter
        self.per_edit_params: List[int] = []
        self.changed_names: set = set()  # weight-editing methods: names of tensors changed so far

    def after_edit(self, model, weights_copy, n_requests: int) -> None:
        if isinstance(weights_copy, dict):
            self.changed_names.update(weights_copy)
        if self.adapter.trained is not None:
            count = self.adapter.trained(model, weights_copy)
            self.per_edit_params.extend([count / n_requests] * n_requests)

    def summary(self, model, n_edits: int) -> dict:
        """params_per_edit and edit_bytes for the model as the scenario leaves it."""
        size = self.adapter.stored(model, self.changed_names)
        if self.adapter.grown is not None:  # read from what the edits left (GRACE's codebook)
            elements = self.adapter.grown(model)
            return {"params_per_edit": elements / max(n_edits, 1), "edit_bytes": size, "codebook_elements": elements}
        return {"params_per_edit": mean(self.per_edit_params), "edit_bytes": size}
