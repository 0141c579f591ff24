"""Plumbing: find decoder layers, hook interventions onto their outputs, detach them again.

The edit state lives on the model object it edits (never in module globals), so two
models in one process never share edits.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from .intervention import BaFTIntervention

# model_type (HF config) -> dotted path of the decoder-layer ModuleList.
DECODER_LAYER_PATHS: Dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}

STATE_ATTR = "_baft_state"
# Evenly spaced values per parameter tensor that enter the base-model fingerprint.
FINGERPRINT_SAMPLES = 1024


class UnsupportedModelError(ValueError):
    """The model's architecture has no entry in DECODER_LAYER_PATHS."""


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks, looked up in DECODER_LAYER_PATHS by config.model_type."""
    arch = model_type(model)
    if arch not in DECODER_LAYER_PATHS:
        raise UnsupportedModelError(
            f"model_type={arch!r} is not supported; BaFT knows {sorted(DECODER_LAYER_PATHS)}. "
            "Add its decoder-layer path to easyedit_baft.layers.DECODER_LAYER_PATHS."
        )
    module = model
    for part in DECODER_LAYER_PATHS[arch].split("."):
        module = getattr(module, part)
    return module


def _sampled_bytes(tensor: torch.Tensor) -> bytes:
    """Evenly spaced values of a tensor, as bytes that do not depend on its device or float width."""
    flat = tensor.detach().reshape(-1)
    count = min(FINGERPRINT_SAMPLES, flat.numel())
    index = torch.linspace(0, flat.numel() - 1, count, dtype=torch.float64).round().long()
    values = flat[index.to(flat.device)]
    if values.is_floating_point():
        # Rounded to bfloat16, a float32 and a bfloat16 load of one checkpoint hash the same.
        values = values.to(torch.bfloat16).view(torch.int16)
    return values.cpu().numpy().tobytes()


def base_model_fingerprint(model) -> str:
    """A cheap sha256 of the model's weights: every parameter's shape and a strided sample of it."""
    digest = hashlib.sha256()
    for parameter in model.parameters():  # BaFT interventions are not submodules: never included
        digest.update(repr(tuple(parameter.shape)).encode())
        digest.update(_sampled_bytes(parameter))
    return digest.hexdigest()


def hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)


def layer_device(layer: nn.Module) -> torch.device:
    """Where a layer computes (with device_map='auto' each layer may sit on its own device)."""
    for tensor in list(layer.parameters()) + list(layer.buffers()):
        return tensor.device
    return torch.device("cpu")


def _replace_hidden(output, new_hidden):
    """Put new_hidden where a decoder layer's output keeps its hidden states."""
    if isinstance(output, torch.Tensor):
        return new_hidden
    return (new_hidden,) + tuple(output[1:])


def _hidden_of(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


class BaFTState:
    """Everything one model's edits consist of: interventions, hooks, usage, the edit log."""

    def __init__(self, hparams_dict: dict):
        self.hparams = hparams_dict
        self.interventions: Dict[int, BaFTIntervention] = {}
        self.hooks: List[torch.utils.hooks.RemovableHandle] = []
        self.edit_log: List[dict] = []
        self.edit_count = 0
        # Inputs of the lowest intervened layer for earlier edits, replayed in continual editing.
        self.replay_memory: List[dict] = []
        self.enabled = True
        self.last_report = None  # the trainer's EditReport of the latest edit (set by apply_baft_to_model)

    def snapshot(self) -> dict:
        """Everything an edit may change, to undo it exactly; its cost does not grow with past edits."""
        return {
            "interventions": {i: m.snapshot() for i, m in self.interventions.items()},
            # The log and the replay memory only grow: their lengths undo an edit.
            "edit_log": len(self.edit_log),
            "edit_count": self.edit_count,
            "replay_memory": len(self.replay_memory),
        }

    def restore(self, snap: dict) -> None:
        for i, module_snap in snap["interventions"].items():
            self.interventions[i].restore(module_snap)
        del self.edit_log[snap["edit_log"]:]
        self.edit_count = snap["edit_count"]
        del self.replay_memory[snap["replay_memory"]:]


class _InterventionHook:
    """Forward hook that applies one intervention to its layer's output.

    An object rather than a closure: copy.deepcopy(model) then copies the hook together with
    the model's state and interventions, so a copied model computes with its own edits.
    """

    def __init__(self, state: BaFTState, index: int):
        self.state, self.index = state, index  # looked up at each call, so a copied model's hook reads its own state

    def __call__(self, _layer, _args, output):
        if not self.state.enabled:
            return output
        hidden, module = _hidden_of(output), self.state.interventions[self.index]
        # The interventions are not submodules, so model.to(device) leaves them behind: follow the layer.
        if next(module.parameters()).device != hidden.device:
            module.to(hidden.device)
        return _replace_hidden(output, module(hidden))


def get_state(model: nn.Module) -> Optional[BaFTState]:
    return model.__dict__.get(STATE_ATTR)


def attach(model: nn.Module, interventions: Dict[int, BaFTIntervention], hparams_dict: dict) -> BaFTState:
    """Hook each intervention onto the output of its decoder layer (the residual stream)."""
    if get_state(model) is not None:
        raise RuntimeError("this model already carries BaFT edits; detach them first")
    layers = decoder_layers(model)
    state = BaFTState(hparams_dict)
    for index, module in sorted(interventions.items()):
        state.interventions[index] = module
        state.hooks.append(layers[index].register_forward_hook(_InterventionHook(state, index)))
    place_on_layers(model, state)
    # A plain attribute, not a submodule: the model's state_dict and parameters stay as they were.
    model.__dict__[STATE_ATTR] = state
    return state


def place_on_layers(model: nn.Module, state: BaFTState) -> None:
    """Move each intervention to its layer's device (after model.to(...), they are left behind)."""
    layers = decoder_layers(model)
    for index, module in state.interventions.items():
        module.to(layer_device(layers[index]))


def detach(model: nn.Module) -> None:
    """Remove every BaFT hook and the state: the model computes exactly as before any edit."""
    state = model.__dict__.pop(STATE_ATTR, None)
    if state is None:
        return
    for handle in state.hooks:
        handle.remove()
    state.hooks.clear()


@contextlib.contextmanager
def interventions_disabled(model: nn.Module) -> Iterator[None]:
    """Run the model as if unedited (hooks pass outputs through untouched)."""
    state = get_state(model)
    previous = state.enabled if state else None
    if state:
        state.enabled = False
    try:
        yield
    finally:
        if state:
            state.enabled = previous


def _run_until_stopped(model: nn.Module, handles, inputs: dict) -> None:
    """Forward without grad until a capturing hook raises _StopForward; always remove the hooks."""
    try:
        with torch.no_grad():
            model(**inputs)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def capture_layer_input(model: nn.Module, index: int, **inputs) -> torch.Tensor:
    """Run the model once (no grad) and return the hidden states entering decoder layer `index`."""
    layers = decoder_layers(model)
    captured = {}

    def pre_hook(_layer, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
        raise _StopForward

    _run_until_stopped(model, [layers[index].register_forward_pre_hook(pre_hook, with_kwargs=True)], inputs)
    return captured["h"]


def capture_intervention_inputs(model: nn.Module, indices: List[int], **inputs) -> Dict[int, torch.Tensor]:
    """Run the model once (no grad) and return what each intervention at `indices` receives."""
    layers = decoder_layers(model)
    captured: Dict[int, torch.Tensor] = {}
    last = max(indices)

    def make_hook(index):
        def hook(_layer, _args, output):
            captured[index] = _hidden_of(output).detach()
            if index == last:
                raise _StopForward
        return hook

    # prepend=True: runs before the intervention's own hook, so it sees the layer's raw output.
    _run_until_stopped(model, [layers[i].register_forward_hook(make_hook(i), prepend=True) for i in indices], inputs)
    return captured


class _StopForward(Exception):
    """Ends a forward pass early once the wanted hidden states are captured."""


class _PassThrough(nn.Module):
    """Stands in for a skipped decoder layer: returns its input in the layer's output format."""

    def __init__(self, returns_tuple: bool):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states, None) if self.returns_tuple else hidden_states


@contextlib.contextmanager
def reuse_layer_input(model: nn.Module, index: int, cached: torch.Tensor) -> Iterator[None]:
    """Within the block, layers below `index` are skipped and layer `index` reads `cached`.

    The frozen layers below the lowest intervention give the same states at every training
    step, so they are computed once per edit instead of once per step.
    """
    if index == 0:
        yield
        return
    layers = decoder_layers(model)
    originals = [layers[i] for i in range(index)]
    returns_tuple = model_type(model) == "gptj"  # GPT-J blocks return (hidden, attn_weights)

    def pre_hook(_layer, args, kwargs):
        if args:
            return (cached,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": cached}

    handle = layers[index].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for i in range(index):
            layers[i] = _PassThrough(returns_tuple)
        yield
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
        handle.remove()


class NoEditsError(ValueError):
    """An operation needs BaFT edits on the model, and it carries none."""


def require_state(model: nn.Module, action: str) -> BaFTState:
    """The model's edit state, or NoEditsError saying what `action` needed."""
    state = get_state(model)
    if state is None or not state.interventions:
        raise NoEditsError(
            f"{action}: this model carries no BaFT edits; edit it with apply_baft_to_model "
            "or load saved edits with load_edits first"
        )
    return state
