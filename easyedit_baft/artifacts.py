"""Edits as portable artifacts: save a model's BaFT edits, load them onto a fresh model, remove them.

A saved edit is a directory of two files:

    edits.safetensors   every intervention's tensors, named layers.{i}.{state_dict key}
                        (R, W, b, U, c of the trainable block, the frozen bases, basis_usage)
    edit_config.json    format version, the base model's identity, the BaFT hparams, the edit
                        log, edit_count, the replay memory, the sha256 of edits.safetensors, and
                        config_sha256: the sha256 of every other field of this file

Loading reads only safetensors and JSON, so it never executes code from the artifact, and it
refuses an artifact in which any field or tensor was changed after saving.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import layers as plumbing
from .explain import Explanation, explain, render_heatmap
from .hparams import BaFTHyperParams, HParamsError
from .intervention import FROZEN_BUFFERS
from .layers import FINGERPRINT_SAMPLES, NoEditsError, base_model_fingerprint
from .prompt_sources import recorded_locality_source
from .trainer import build_interventions

__all__ = [
    "ArtifactError",
    "NoEditsError",
    "Explanation",
    "save_edits",
    "load_edits",
    "remove_edits",
    "explain",
    "render_heatmap",
    "base_model_fingerprint",
    "read_artifact",
    "SavedEdits",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

FORMAT_NAME = "easyedit-baft-edits"
# 2: config_sha256 covers the whole config, not only the tensor file.
# 3: R, W, b, U, c stored as they compute (2 stored the orthogonal parametrization).
FORMAT_VERSION = 3
WEIGHTS_NAME = "edits.safetensors"
CONFIG_NAME = "edit_config.json"
EDIT_METHOD = "BaFT"
FINGERPRINT_METHOD = f"sha256 of shapes and {FINGERPRINT_SAMPLES} strided values per parameter, rounded to bfloat16"

PathLike = Union[str, Path]


class ArtifactError(ValueError):
    """A saved edit cannot be loaded onto this model; the message says what is wrong and the fix."""


# --- the base model's identity ---------------------------------------------------------------


def _base_model_name(model, state: plumbing.BaFTState) -> str:
    """The model that was edited: the path it was loaded from first, the hparams' model_name after."""
    for name in (getattr(model.config, "_name_or_path", ""), state.hparams.get("model_name")):
        if isinstance(name, str) and name:
            return name
    return type(model).__name__


def _base_model_identity(model) -> dict:
    return {
        "model_type": plumbing.model_type(model),
        "hidden_size": plumbing.hidden_size(model),
        "num_hidden_layers": len(plumbing.decoder_layers(model)),
        "fingerprint": base_model_fingerprint(model),
        "fingerprint_method": FINGERPRINT_METHOD,
    }


# --- saving ----------------------------------------------------------------------------------


def _tensor_name(layer: int, key: str) -> str:
    return f"layers.{layer}.{key}"


def _tensors_of(state: plumbing.BaFTState) -> Dict[str, torch.Tensor]:
    """Every intervention's full state_dict: what reproduces its outputs bit for bit."""
    return {
        _tensor_name(layer, key): tensor.detach().cpu().contiguous()
        for layer, module in sorted(state.interventions.items())
        for key, tensor in module.state_dict().items()
    }


def _non_finite_tensor(tensors: Dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first tensor holding NaN or an infinity, or None."""
    for name, tensor in sorted(tensors.items()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


CHECKSUM_FIELD = "config_sha256"


def config_checksum(config: dict) -> str:
    """sha256 of every field but config_sha256 itself, as canonical JSON (key order and spacing do not count)."""
    fields = {key: value for key, value in config.items() if key != CHECKSUM_FIELD}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _edit_config(model, state: plumbing.BaFTState, weights_sha256: str, base_model_name: Optional[str]) -> dict:
    hparams = dict(state.hparams)
    hparams["locality_source"] = recorded_locality_source(hparams.get("locality_source"))
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "edit_method": EDIT_METHOD,
        "base_model_name_or_path": base_model_name or _base_model_name(model, state),
        "base_model": _base_model_identity(model),
        "layers_to_transform": sorted(state.interventions),
        "r": next(iter(state.interventions.values())).rank,
        "hparams": hparams,
        "edit_count": state.edit_count,
        "edit_log": state.edit_log,
        "replay_memory": [{"ids": list(m["ids"]), "n_prompt": m["n_prompt"]} for m in state.replay_memory],
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": weights_sha256,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    config = json.loads(json.dumps(config))  # the checksum is of what a reader will parse back
    config[CHECKSUM_FIELD] = config_checksum(config)
    return config


def _write_temp(directory: Path, name: str, data: bytes) -> Path:
    """Write data to a hidden temporary file beside `name`, flushed to disk."""
    path = directory / f".{name}.{secrets.token_hex(8)}.tmp"
    # Mode 0o666 under the user's umask, as any file they create (mkstemp would give 0o600).
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return path


def save_edits(model, directory: PathLike, base_model_name: Optional[str] = None) -> Path:
    """Write the model's BaFT edits to `directory` (created if needed); returns the directory.

    base_model_name is recorded as the edited model's name (default: the path the model was loaded
    from). Both files are written to temporary names first and then renamed, the config last: a
    reader sees the old artifact, the new one, or a checksum mismatch, never a silently mixed one.
    """
    state = plumbing.require_state(model, "save_edits")
    directory = Path(directory)
    tensors = _tensors_of(state)
    bad = _non_finite_tensor(tensors)
    if bad is not None:
        raise ArtifactError(f"tensor {bad!r} of these edits holds NaN or infinite values, so load_edits would "
                            "refuse it; remove the edits and edit again (a lower lr keeps training finite)")
    weights = save_safetensors_bytes(tensors, metadata={"format": "pt", "edit_method": EDIT_METHOD})
    config = _edit_config(model, state, hashlib.sha256(weights).hexdigest(), base_model_name)
    config_bytes = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    temp_files = []
    try:
        temp_files.append(_write_temp(directory, WEIGHTS_NAME, weights))
        temp_files.append(_write_temp(directory, CONFIG_NAME, config_bytes))
        os.replace(temp_files[0], directory / WEIGHTS_NAME)
        os.replace(temp_files[1], directory / CONFIG_NAME)
    finally:
        for temp_file in temp_files:
            temp_file.unlink(missing_ok=True)
    return directory


# --- reading and checking an artifact ---------------------------------------------------------

RESAVE_HINT = "save the edits again with save_edits, or copy the whole directory again"


def _field(mapping: dict, name: str, kind, where: str = ""):
    """mapping[name], checked to be of `kind`; ArtifactError naming the field otherwise."""
    if name not in mapping:
        raise ArtifactError(f"{CONFIG_NAME}: field '{where}{name}' is missing; {RESAVE_HINT}")
    value = mapping[name]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ArtifactError(
            f"{CONFIG_NAME}: field '{where}{name}' is {value!r:.60}, expected a {expected}; {RESAVE_HINT}"
        )
    return value


def _read_regular_file(directory: Path, name: str) -> bytes:
    """The bytes of directory/name; ArtifactError when it is missing or not a regular file (a FIFO never blocks)."""
    path = directory / name
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; fstat then refuses it.
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ArtifactError(f"{name} is missing from {str(directory)!r}; {RESAVE_HINT}") from None
    except OSError as err:
        raise ArtifactError(f"{name} in {str(directory)!r} cannot be read ({err.strerror}); {RESAVE_HINT}") from err
    with os.fdopen(handle, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ArtifactError(f"{name} in {str(directory)!r} is not a regular file; {RESAVE_HINT}")
        return file.read()


def _read_config(directory: Path) -> dict:
    if not directory.is_dir():
        raise ArtifactError(f"{str(directory)!r} is not a directory; pass the directory save_edits wrote")
    data = _read_regular_file(directory, CONFIG_NAME)
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{CONFIG_NAME} in {str(directory)!r} is not valid JSON ({err}); {RESAVE_HINT}") from err
    if not isinstance(config, dict):
        raise ArtifactError(f"{CONFIG_NAME} holds a {type(config).__name__}, not an object; {RESAVE_HINT}")
    return config


def _check_format(config: dict) -> None:
    if config.get("format") != FORMAT_NAME:
        raise ArtifactError(
            f"{CONFIG_NAME}: format={config.get('format')!r}, expected {FORMAT_NAME!r}; "
            "this directory does not hold BaFT edits written by save_edits"
        )
    version = _field(config, "format_version", int)
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{CONFIG_NAME}: format_version={version} is not supported (this easyedit-baft reads "
            f"version {FORMAT_VERSION}); load it with the easyedit-baft release that wrote it"
        )


def _check_config_checksum(config: dict, directory: Path) -> None:
    """Refuse a config whose fields changed after saving: every field steers what the edit computes or records."""
    expected = _field(config, CHECKSUM_FIELD, str)
    try:
        actual = config_checksum(config)
    except ValueError as err:  # NaN or an infinity, which save_edits never writes
        raise ArtifactError(f"{CONFIG_NAME} in {str(directory)!r} holds a non-finite number; {RESAVE_HINT}") from err
    if actual != expected:
        raise ArtifactError(
            f"{CONFIG_NAME} in {str(directory)!r} was changed after saving: its fields hash to {actual[:16]}…, "
            f"its {CHECKSUM_FIELD} records {expected[:16]}…; {RESAVE_HINT} (edit the hparams before editing, "
            "not in a saved artifact)"
        )


def _read_weights(directory: Path, config: dict) -> Dict[str, torch.Tensor]:
    """The saved tensors, after checking the file's sha256 against the config."""
    data = _read_regular_file(directory, WEIGHTS_NAME)  # hashed and parsed from the same bytes
    expected = _field(config, "weights_sha256", str)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArtifactError(
            f"{WEIGHTS_NAME} in {str(directory)!r} is truncated or corrupted: its sha256 is {actual[:16]}…, "
            f"{CONFIG_NAME} records {expected[:16]}… ({len(data)} bytes read); {RESAVE_HINT}"
        )
    try:
        tensors = load_safetensors_bytes(data)
    except SafetensorError as err:
        raise ArtifactError(f"{WEIGHTS_NAME} in {str(directory)!r} does not parse ({err}); {RESAVE_HINT}") from err
    bad = _non_finite_tensor(tensors)
    if bad is not None:
        raise ArtifactError(f"{WEIGHTS_NAME} in {str(directory)!r}: tensor {bad!r} holds NaN or infinite values; "
                            f"{RESAVE_HINT}")
    return tensors


def _check_base_model(model, config: dict, verify_fingerprint: bool) -> None:
    """Refuse a model other than the one the edits were made on."""
    saved = _field(config, "base_model", dict)
    name = config.get("base_model_name_or_path", "?")
    fix = f"load the edits onto the model they were made on ({name!r})"
    now = {
        "model_type": plumbing.model_type(model),
        "hidden_size": plumbing.hidden_size(model),
        "num_hidden_layers": len(plumbing.decoder_layers(model)),
    }
    for key, kind in (("model_type", str), ("hidden_size", int), ("num_hidden_layers", int)):
        expected = _field(saved, key, kind, "base_model.")
        if now[key] != expected:
            raise ArtifactError(f"the edits were made on a model with {key}={expected!r}, this model has "
                                f"{key}={now[key]!r}; {fix}")
    if not verify_fingerprint:
        return
    expected = _field(saved, "fingerprint", str, "base_model.")
    if base_model_fingerprint(model) != expected:
        raise ArtifactError(
            "this model's weights differ from those the edits were made on (base-model fingerprint "
            f"mismatch); {fix}. A float16 load of the right model can also differ: load it in float32 "
            "or bfloat16, or pass verify_base_model=False if you are sure it is the same model"
        )


def _hparams_of(config: dict, name: str) -> BaFTHyperParams:
    """The saved hparams, validated as BaFTHyperParams (the saved dict itself stays the record)."""
    fields = dict(_field(config, "hparams", dict))
    if not isinstance(fields.get("model_name"), str) or not fields.get("model_name"):
        fields["model_name"] = name  # a (model, tokenizer) tuple was saved as None
    try:
        return BaFTHyperParams.from_dict(fields)
    except (HParamsError, TypeError) as err:
        raise ArtifactError(f"{CONFIG_NAME}: field 'hparams' is invalid: {err}; {RESAVE_HINT}") from err


def _check_tensor_names(expected: Dict[str, torch.Tensor], saved: Dict[str, torch.Tensor]) -> None:
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        raise ArtifactError(
            f"{WEIGHTS_NAME} does not match the hparams in {CONFIG_NAME}: missing tensors {missing[:6]}, "
            f"unexpected tensors {extra[:6]}; {RESAVE_HINT}"
        )


def _check_tensor_shapes(expected: Dict[str, torch.Tensor], saved: Dict[str, torch.Tensor]) -> None:
    for name, tensor in expected.items():
        found = saved[name]
        if found.shape != tensor.shape or found.dtype != tensor.dtype:
            raise ArtifactError(
                f"{WEIGHTS_NAME}: tensor {name!r} is {found.dtype} {tuple(found.shape)}, the hparams in "
                f"{CONFIG_NAME} need {tensor.dtype} {tuple(tensor.shape)}; {RESAVE_HINT}"
            )


def _make_room_for_saved(module, layer: int, tensors: Dict[str, torch.Tensor], hparams: BaFTHyperParams) -> None:
    """Give a fresh intervention the bases a grown one (grow_rank) or a batch's (rank_per_request) was saved with."""
    frozen = tensors.get(_tensor_name(layer, FROZEN_BUFFERS[0]))
    block = tensors.get(_tensor_name(layer, "source_weight"))
    if frozen is None or block is None or frozen.dim() != 2 or block.dim() != 2:
        return  # nothing grown, or malformed: the name and shape checks report it
    n_frozen, n_block = frozen.shape[0], block.shape[0]
    if n_frozen == 0 and not hparams.rank_per_request:
        return  # the block has the hparams' rank, checked below
    field = "grow_rank" if n_frozen > 0 else "rank"
    unit = getattr(hparams, field)
    if n_block > module.hidden_size or not unit or n_block % unit or (n_block != unit and not hparams.rank_per_request):
        raise ArtifactError(
            f"{WEIGHTS_NAME}: layer {layer} has a trainable block of {n_block} bases, which {field}={unit} "
            f"(rank_per_request={hparams.rank_per_request}) in {CONFIG_NAME} cannot make; {RESAVE_HINT}")
    module.make_room(n_frozen, n_block)


def _rebuilt_interventions(model, hparams: BaFTHyperParams, tensors: Dict[str, torch.Tensor]) -> dict:
    """Fresh interventions of the saved shape, holding the saved tensors."""
    try:
        interventions = build_interventions(model, hparams)
    except ValueError as err:
        raise ArtifactError(f"{CONFIG_NAME}: the saved hparams do not fit this model: {err}") from err
    for layer, module in interventions.items():
        _make_room_for_saved(module, layer, tensors, hparams)
    expected = {_tensor_name(layer, key): tensor
                for layer, module in interventions.items() for key, tensor in module.state_dict().items()}
    _check_tensor_names(expected, tensors)
    _check_tensor_shapes(expected, tensors)
    for layer, module in interventions.items():
        prefix = _tensor_name(layer, "")
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return interventions


def _replay_memory_of(config: dict) -> List[dict]:
    memory = []
    for index, entry in enumerate(_field(config, "replay_memory", list)):
        where = f"replay_memory[{index}]."
        entry = entry if isinstance(entry, dict) else {}
        ids = _field(entry, "ids", list, where)
        n_prompt = _field(entry, "n_prompt", int, where)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids) \
                or not 0 < n_prompt < len(ids):
            raise ArtifactError(f"{CONFIG_NAME}: field '{where}ids' or 'n_prompt' is malformed; {RESAVE_HINT}")
        memory.append({"ids": tuple(ids), "n_prompt": n_prompt})
    return memory


def _edit_count_of(config: dict) -> int:
    count = _field(config, "edit_count", int)
    if count < 0:
        raise ArtifactError(f"{CONFIG_NAME}: field 'edit_count' is {count}, expected >= 0; {RESAVE_HINT}")
    return count


def _edit_log_of(config: dict) -> List[dict]:
    log = _field(config, "edit_log", list)
    if not all(isinstance(entry, dict) for entry in log):
        raise ArtifactError(f"{CONFIG_NAME}: field 'edit_log' must be a list of objects; {RESAVE_HINT}")
    return log


def _check_replay_vocabulary(model, replay_memory: List[dict]) -> None:
    """Replayed token ids index the model's embedding: each must lie below its vocabulary size."""
    vocab_size = model.get_input_embeddings().weight.shape[0]
    for index, entry in enumerate(replay_memory):
        largest = max(entry["ids"])
        if largest >= vocab_size:
            raise ArtifactError(
                f"{CONFIG_NAME}: field 'replay_memory[{index}].ids' holds token id {largest}, but this model's "
                f"vocabulary has {vocab_size} tokens; load the edits onto the model they were made on"
            )


@dataclass
class SavedEdits:
    """An artifact read from disk and checked as far as it can be without the model it is for."""

    directory: Path
    config: dict
    tensors: Dict[str, torch.Tensor]
    hparams: BaFTHyperParams
    edit_count: int
    edit_log: List[dict]
    replay_memory: List[dict]


def read_artifact(directory: PathLike) -> SavedEdits:
    """Read and check the edits saved in `directory` without a model: files, format, both checksums,
    finite tensors, hparams, edit count, log and replay memory. ArtifactError names what is wrong."""
    directory = Path(directory)
    config = _read_config(directory)
    _check_format(config)
    _check_config_checksum(config, directory)
    tensors = _read_weights(directory, config)
    _field(config, "base_model", dict)
    hparams = _hparams_of(config, str(config.get("base_model_name_or_path") or "base-model"))
    return SavedEdits(directory, config, tensors, hparams, _edit_count_of(config), _edit_log_of(config),
                      _replay_memory_of(config))


def _refuse_edited(model) -> None:
    if plumbing.get_state(model) is not None:
        raise ArtifactError(
            "this model already carries BaFT edits; call remove_edits(model) first, or load onto a fresh model"
        )


def load_edits(model, directory: PathLike, verify_base_model: bool = True):
    """Attach the edits saved in `directory` to `model` (which must carry none); returns the model.

    Every check runs before anything is attached: on any ArtifactError the model is untouched.
    verify_base_model=False skips only the weight fingerprint, never the architecture checks.
    """
    _refuse_edited(model)  # before reading: a refused load reads nothing
    return attach_saved(model, read_artifact(directory), verify_base_model)


def attach_saved(model, saved, verify_base_model: bool = True):
    """Attach edits that read_artifact already read and checked: the model-dependent checks, then attach."""
    _refuse_edited(model)
    _check_base_model(model, saved.config, verify_base_model)
    _check_replay_vocabulary(model, saved.replay_memory)
    interventions = _rebuilt_interventions(model, saved.hparams, saved.tensors)

    state = plumbing.attach(model, interventions, saved.config["hparams"])
    state.edit_count, state.edit_log, state.replay_memory = saved.edit_count, saved.edit_log, saved.replay_memory
    return model


def remove_edits(model) -> None:
    """Detach every BaFT edit: the model computes exactly as before it was edited (no-op without edits)."""
    plumbing.detach(model)
