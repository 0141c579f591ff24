"""BaFTHyperParams: every knob of a BaFT edit, validated once when built."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union

import yaml

from ..prompt_sources import RELATION_TEMPLATE_FILES, LocalitySource, is_named_source

from .. import host as _host

# The host's base class, so EasyEdit treats BaFT like its own methods. Getting it imports the host
# (where importable) once, here: the registration in easyedit_baft/__init__.py then finds it loaded.
_HostHyperParams = _host.host_hyperparams_class()


if _HostHyperParams is None:

    @dataclass
    class _HostHyperParams:  # noqa: F811 - same interface as easyeditor.util.hparams.HyperParams
        """Stand-in for EasyEdit's HyperParams when no host is importable."""

        def to_dict(self) -> dict:
            return dataclasses.asdict(self)


ALG_NAME = "BaFT"
EARLY_STOP_RULES = ("argmax", "loss", "none")
GATE_MODES = ("learned", "ones")
LOCALITY_PENALTIES = ("change_peak", "gate_mean")


def locality_source_from_file(source, hparams_file: Union[str, Path]):
    """locality_source as a YAML file names it: a relative path is read from that file's folder,
    so the config works from any working directory; saved edits record it as the file spelled it."""
    if isinstance(source, str) and not is_named_source(source) and not Path(source).expanduser().is_absolute():
        return LocalitySource(os.path.abspath(Path(hparams_file).parent / source), given=source)
    return source


class HParamsError(ValueError):
    """A hyper-parameter has a wrong type or value; the message says how to fix it."""


@dataclass
class BaFTHyperParams(_HostHyperParams):
    # What EasyEdit's BaseEditor reads.
    model_name: Any  # a path, or a (model, tokenizer) tuple as BaseEditor accepts
    alg_name: str = ALG_NAME
    device: Union[int, str] = "cpu"
    model_parallel: bool = False
    fp16: bool = False
    batch_size: int = 1
    max_length: int = 40

    # Where and how big the intervention is.
    layers: List[int] = field(default_factory=lambda: [10])
    rank: int = 4
    # rank and grow_rank count bases per request: a call of B requests (a batch) trains B times as many,
    # as many per fact as a single edit has (the facts share them as training sorts them). Single edits
    # are unchanged; without grow_rank a later call retrains the first call's block, whatever its size.
    rank_per_request: bool = False

    # Optimisation of one edit (or one batch of edits).
    lr: float = 1e-2
    n_steps: int = 60  # a cap: training stops earlier by early_stop
    early_stop: str = "argmax"  # 'argmax': every target token is the argmax; 'loss': below early_stop_loss
    early_stop_loss: float = 0.05
    # Early stop also waits until the locality penalty on unrelated prompts is at most this (None: it
    # does not wait). Stopping as soon as the edit holds leaves the gate half-open on unrelated text.
    early_stop_locality: Optional[float] = None
    # At the step cap, an edit that held but never within early_stop_locality ends at its most local step
    # that held only where that step's penalty is at most this; beyond it, at its best step within the
    # budget (None: no bound). In a sequence one block far over the budget moves every later prompt.
    cap_locality: Optional[float] = None
    weight_decay: float = 0.0

    # The basis gate g(h) = sigmoid((U h + c) / tau).
    gate: str = "learned"  # 'ones' fixes g == 1, which is LoReFT
    gate_temperature: float = 1.0
    gate_init_bias: float = -3.0  # gates start nearly closed, so unrelated inputs start untouched
    gate_init_std: float = 0.0
    gate_input_norm: bool = True  # the gate reads h / rms(h): a project choice, see intervention.py
    # The gate reads its input minus its mean over the unrelated prompts' tokens at the layer:
    # hidden states share a large common direction, which otherwise opens a gate for every input.
    gate_center: bool = False
    # A frozen basis (an earlier edit, with grow_rank) whose gate is at most this adds nothing there.
    gate_floor: float = 0.0

    # Loss weights: L = L_edit + lambda_loc * L_loc + lambda_lb * L_lb.
    # L_loc = locality_penalty on unrelated prompts + kl_weight * KL to their pre-edit next-token
    # distribution. The penalty needs no forward pass above the layer; the KL term does.
    lambda_loc: float = 1.0
    # 'change_peak': relative change of the hidden state at the worst position of each unrelated
    # prompt; 'gate_mean': mean gate over positions. A project choice, decided by benchmarks.
    locality_penalty: str = "change_peak"
    kl_weight: float = 0.0
    lambda_lb: float = 0.1  # incremental load balancing over bases

    # Unrelated prompts for L_loc: 'builtin' (shipped with the package) or a file path
    # (in a YAML file, a relative path is read from that file's folder).
    locality_source: str = "builtin"
    n_locality_prompts: int = 32
    # Per request, its prompt with the subject swapped for this many other names, also held unchanged.
    n_subject_swaps: int = 0
    # Per request, its subject asked about through this many other relations, also held unchanged: the
    # gate must tell the edited relation from the subject's others. Their templates: 'questions' (of the
    # ZsRE train split) or 'statements' (written for the package; a question's paraphrases stay questions).
    n_relation_swaps: int = 0
    relation_templates: str = "questions"
    # Once an edit holds within early_stop_locality, its trainable bases are checked once on every pool
    # prompt and, with replay_at_layer and grow_rank, every earlier edit's prompt (states cached at the
    # one layer; rows held already and an earlier edit of the same prompt are skipped). Up to this many
    # that move more than the budget then form a group of held rows whose mean must meet it too. 0: off.
    screen_negatives: int = 0

    # Generalisation: the target is also trained after this many short neutral prefixes.
    n_context_prefixes: int = 2

    # Continual editing: earlier edits replayed (from stored layer inputs) per new edit.
    replay_edits: int = 8
    early_stop_waits_for_replay: bool = False  # also wait until every replayed edit holds again
    # With grow_rank, hold replayed edits' prompts unchanged at the layer, like unrelated prompts
    # (so through the model only for the KL term), instead of training their targets again: a
    # sequence's edits then cost what a first edit costs. Needs lambda_loc > 0.
    replay_at_layer: bool = False
    # Each edit after the first freezes every basis so far and trains this many new ones (0: all
    # bases train at every edit). Protects earlier edits from being overwritten by later ones.
    grow_rank: int = 0

    seed: int = 42

    def __post_init__(self):
        validate(self)

    @classmethod
    def from_hparams(cls, hparams_name_or_path: Union[str, Path]) -> "BaFTHyperParams":
        """Load a .yaml, .yml or .json file (a bare name gets '.yaml' appended, as in EasyEdit)."""
        path = Path(str(hparams_name_or_path))
        if path.suffix not in (".yaml", ".yml", ".json"):
            path = path.with_name(path.name + ".yaml")
        if not path.is_file():
            raise FileNotFoundError(
                f"hparams file {str(path)!r} does not exist; pass the path of a BaFT YAML, "
                "e.g. hparams/BaFT/llama-7b.yaml"
            )
        text = path.read_text(encoding="utf-8")
        try:
            config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise HParamsError(f"hparams file {str(path)!r} does not parse: {err}") from err
        if not isinstance(config, dict):
            raise HParamsError(
                f"hparams file {str(path)!r} must hold a mapping of field: value, "
                f"got {type(config).__name__}"
            )
        if config.get("alg_name") != ALG_NAME:
            raise HParamsError(
                f"alg_name={config.get('alg_name')!r} in {str(path)!r}; BaFTHyperParams loads "
                f"only files with alg_name: {ALG_NAME}"
            )
        if "locality_source" in config:
            config = {**config, "locality_source": locality_source_from_file(config["locality_source"], path)}
        return cls.from_dict(config)

    @classmethod
    def from_dict(cls, config: dict) -> "BaFTHyperParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise HParamsError(
                f"unknown hparams field(s) {unknown}; remove them or fix their spelling "
                f"(known fields: {sorted(known)})"
            )
        if "model_name" not in config:
            raise HParamsError("model_name is missing; set it to a model path")
        return cls(**config)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if not isinstance(data["model_name"], (str, type(None))):
            data["model_name"] = None  # a (model, tokenizer) tuple is not serialisable
        return data


def _fail(name: str, value: Any, expected: str) -> None:
    raise HParamsError(f"{name}={value!r} is invalid: {expected}")


def _check_int(hp, name: str, low: int, high: Optional[int] = None) -> None:
    value = getattr(hp, name)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, f"it must be an integer >= {low}")
    if value < low or (high is not None and value > high):
        _fail(name, value, f"it must lie in [{low}, {high if high is not None else 'inf'}]")


def _check_float(hp, name: str, low: float, strictly_above: bool = False) -> None:
    value = getattr(hp, name)
    if isinstance(value, str):  # YAML reads '1e-3' as a string; EasyEdit converts it the same way
        try:
            value = float(value)
            setattr(hp, name, value)
        except ValueError:
            _fail(name, value, "it must be a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(name, value, "it must be a finite number")
    if value < low or (strictly_above and value == low):
        _fail(name, value, f"it must be {'>' if strictly_above else '>='} {low}")
    setattr(hp, name, float(value))


def _check_choice(hp, name: str, choices) -> None:
    value = getattr(hp, name)
    if value not in choices:
        _fail(name, value, f"choose one of {list(choices)}")


def _check_bool(hp, name: str) -> None:
    value = getattr(hp, name)
    if not isinstance(value, bool):
        _fail(name, value, "it must be true or false")


def validate(hp: BaFTHyperParams) -> None:
    """Check every field's type and range; raise HParamsError naming the first bad one."""
    if hp.alg_name != ALG_NAME:
        _fail("alg_name", hp.alg_name, f"BaFTHyperParams needs alg_name '{ALG_NAME}'")
    if not (isinstance(hp.model_name, str) and hp.model_name) and not (
        isinstance(hp.model_name, tuple) and len(hp.model_name) == 2
    ):
        _fail("model_name", hp.model_name, "give a model path, or a (model, tokenizer) tuple")
    if isinstance(hp.device, bool) or not (
        (isinstance(hp.device, int) and hp.device >= 0)
        or (isinstance(hp.device, str) and hp.device.split(":")[0] in ("cpu", "cuda", "mps"))
    ):
        _fail("device", hp.device, "use a CUDA index (0, 1, ...) or 'cpu', 'cuda', 'cuda:N', 'mps'")
    for name in ("model_parallel", "fp16", "gate_input_norm", "gate_center", "early_stop_waits_for_replay",
                 "replay_at_layer", "rank_per_request"):
        _check_bool(hp, name)
    _check_int(hp, "batch_size", 1)
    _check_int(hp, "max_length", 1)
    if isinstance(hp.layers, int) and not isinstance(hp.layers, bool):
        hp.layers = [hp.layers]
    if (
        not isinstance(hp.layers, (list, tuple))
        or not hp.layers
        or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in hp.layers)
    ):
        _fail("layers", hp.layers, "give a non-empty list of decoder-layer indices >= 0")
    if len(set(hp.layers)) != len(hp.layers):
        _fail("layers", hp.layers, "each layer may appear once")
    hp.layers = sorted(hp.layers)
    _check_int(hp, "rank", 1)
    _check_float(hp, "lr", 0.0, strictly_above=True)
    _check_int(hp, "n_steps", 1)
    _check_choice(hp, "early_stop", EARLY_STOP_RULES)
    _check_float(hp, "early_stop_loss", 0.0, strictly_above=True)
    if hp.early_stop_locality is not None:
        _check_float(hp, "early_stop_locality", 0.0, strictly_above=True)
    if hp.cap_locality is not None:
        if hp.early_stop_locality is None:
            _fail("cap_locality", hp.cap_locality, "it bounds a step beyond early_stop_locality: set "
                  "early_stop_locality too, or cap_locality: null")
        _check_float(hp, "cap_locality", hp.early_stop_locality)
    _check_float(hp, "weight_decay", 0.0)
    _check_choice(hp, "gate", GATE_MODES)
    _check_choice(hp, "locality_penalty", LOCALITY_PENALTIES)
    _check_float(hp, "gate_temperature", 0.0, strictly_above=True)
    _check_float(hp, "gate_init_bias", -math.inf)
    _check_float(hp, "gate_init_std", 0.0)
    _check_float(hp, "gate_floor", 0.0)
    if hp.gate_floor >= 1:
        _fail("gate_floor", hp.gate_floor, "gates are below 1: use 0 <= gate_floor < 1 (0 turns it off)")
    for name in ("lambda_loc", "kl_weight", "lambda_lb"):
        _check_float(hp, name, 0.0)
    if not isinstance(hp.locality_source, str) or not hp.locality_source:
        _fail("locality_source", hp.locality_source, "use 'builtin' or the path of a prompts file")
    _check_int(hp, "n_locality_prompts", 0)
    _check_int(hp, "n_subject_swaps", 0)
    _check_int(hp, "n_relation_swaps", 0)
    _check_choice(hp, "relation_templates", RELATION_TEMPLATE_FILES)
    _check_int(hp, "screen_negatives", 0)
    if hp.screen_negatives and (hp.early_stop_locality is None or hp.lambda_loc <= 0):
        _fail("screen_negatives", hp.screen_negatives, "the check holds rows to early_stop_locality: set "
              "early_stop_locality and lambda_loc > 0, or screen_negatives: 0")
    if hp.screen_negatives and len(hp.layers) > 1:
        # Above the lowest intervened layer, states depend on the edits below: none could be cached.
        _fail("screen_negatives", hp.screen_negatives, f"the check reads cached states of one layer, and "
              f"layers={hp.layers}: intervene on one layer, or screen_negatives: 0")
    _check_int(hp, "n_context_prefixes", 0)
    _check_int(hp, "replay_edits", 0)
    _check_int(hp, "grow_rank", 0)
    _check_int(hp, "seed", 0, 2**32 - 1)
