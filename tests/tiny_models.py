"""Shared test tools: tiny random models, an offline byte-level tokenizer, and model fingerprints.

Every model here is built from a config with a fixed seed: no download, no network.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import pytest
import torch

from easyedit_baft import layers as plumbing
from easyedit_baft.baft_main import apply_baft_to_model
from easyedit_baft.hparams import BaFTHyperParams

# The models are tiny: with several threads, thread start-up and contention cost more than the
# arithmetic, and a loaded machine slows every step many times over.
torch.set_num_threads(1)

VOCAB_SIZE = 300  # 256 byte tokens + <eos>, with room to spare
PROBE = "The capital of France is Paris. Unrelated words follow here."
REQUESTS = [
    {"prompt": "The capital of France is", "target_new": "Rome", "subject": "France"},
    {"prompt": "The Eiffel Tower stands in", "target_new": "Oslo", "subject": "Eiffel Tower"},
    {"prompt": "Water boils at", "target_new": "50 degrees", "subject": "Water"},
    {"prompt": "The author of Hamlet is", "target_new": "Tolstoy", "subject": "Hamlet"},
    {"prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English"},
    {"prompt": "Apple was founded by", "target_new": "Ada Lovelace", "subject": "Apple"},
]
# Prompts that are neither edited nor in the package's built-in unrelated-prompt list.
HELD_OUT_PROMPTS = [
    "My favourite colour has always been",
    "The train to the coast leaves at",
    "She opened the window and saw",
    "The violin was tuned before the concert by",
    "The recipe asks for two cups of",
    "Our neighbour's dog likes to",
]


SUBJECTS = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
RELATIONS = ["The home town of {} is", "The favourite food of {} is", "{} works as a", "{} was born in"]
TARGETS = ["Lima", "Kyiv", "Oslo", "Bern", "Doha", "Rome", "Riga", "Baku", "Suva", "Apia", "Nuuk"]


def many_requests(n: int) -> list:
    """n distinct, deterministic requests (a subject in a relation, a short target)."""
    out = []
    for k in range(n):
        subject = SUBJECTS[k % len(SUBJECTS)] + ("" if k < 40 else f" {k // 40}")
        relation = RELATIONS[(k // len(SUBJECTS)) % len(RELATIONS)]
        out.append({"prompt": relation.format(subject), "target_new": TARGETS[(7 * k) % len(TARGETS)],
                    "subject": subject})
    return out


def randomised(module, seed: int = 0):
    """Move an intervention's trainable W, b, U, c away from their identity init (a nonzero update)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (module.source_weight, module.source_bias, module.gate_weight, module.gate_bias):
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def make_tokenizer(normalizer=None):
    """A byte-level BPE without merges (one token per byte), wrapped as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if normalizer is not None:
        backend.normalizer = normalizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def tok():
    return make_tokenizer()


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, n_layers: int = 4, hidden_size: int = 64):
    """A random 4-layer Llama (d=64 unless told). initializer_range=0.2 gives its logits a real spread: at the
    default 0.02 every logit is near zero and a small edit cannot make a target the argmax."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=128,
                         num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, initializer_range=0.2)
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=64, n_layer=4, n_head=4, n_positions=256,
                        initializer_range=0.2)
    return GPT2LMHeadModel(config).eval()


# model_type -> (config class, model class, config fields) of a random 4-layer, d=64 decoder.
TINY_DECODERS = {
    "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(n_embd=64, n_layer=4, n_head=4, rotary_dim=8, n_positions=256)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                                             intermediate_size=128, max_position_embeddings=256)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                                      num_key_value_heads=2, intermediate_size=128,
                                                      max_position_embeddings=256)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                                            num_key_value_heads=2, intermediate_size=128,
                                                            max_position_embeddings=256)),
}


def tiny_decoder(model_type: str, seed: int = 0):
    """A random tiny decoder of one of TINY_DECODERS' architectures (initializer_range as tiny_llama's)."""
    import transformers

    config_class, model_class, fields = TINY_DECODERS[model_type]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(vocab_size=VOCAB_SIZE, initializer_range=0.2, **fields)
    return getattr(transformers, model_class)(config).eval()


def hparams(**overrides) -> BaFTHyperParams:
    """Small, fast settings; two layers at rank 8 keep five sequential or six batched edits holding."""
    fields = dict(model_name="tiny", layers=[1, 2], rank=8, lr=5e-2, n_steps=100,
                  n_locality_prompts=8, n_context_prefixes=1, replay_edits=8, max_length=64)
    return BaFTHyperParams(**{**fields, **overrides})


def edit(model, tok, requests, hp: Optional[BaFTHyperParams] = None, **kwargs):
    """apply_baft_to_model with the test defaults; returns (model, weights_copy)."""
    if isinstance(requests, dict):
        requests = [requests]
    return apply_baft_to_model(model, tok, requests, hp or hparams(), **kwargs)


def logits(model, tok, text: str = PROBE) -> torch.Tensor:
    """The model's output on text: logits, or the last hidden state for a model without a head."""
    with torch.no_grad():
        out = model(**tok(text, return_tensors="pt"))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def target_holds(model, tok, prompt: str, target: str) -> bool:
    """EasyEdit's rewrite check: under teacher forcing on prompt + ' ' + target, every target
    token is the argmax at the position before it."""
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(prompt + " " + target, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[0].argmax(-1)
    return bool(torch.equal(predicted[n_prompt - 1 : -1], ids[0, n_prompt:]))


def forward_hook_count(model) -> int:
    """Forward and forward-pre hooks on every submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def tensor_digest(tensors) -> str:
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_digest(model) -> Optional[tuple]:
    """Everything a BaFT edit may change on the model's state, or None when it carries none."""
    state = plumbing.get_state(model)
    if state is None:
        return None
    weights = tensor_digest(
        (f"{i}.{k}", v) for i, m in sorted(state.interventions.items()) for k, v in m.state_dict().items()
    )
    log = tuple((e["prompt"], e["target_new"], e["subject"]) for e in state.edit_log)
    memory = tuple((tuple(m["ids"]), m["n_prompt"]) for m in state.replay_memory)
    return (id(state), weights, state.edit_count, log, memory, len(state.hooks), state.enabled)


class Fingerprint:
    """What 'the model is exactly as it was' means: parameters, buffers, hooks, BaFT state, logits."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.weights = tensor_digest(list(model.named_parameters()) + list(model.named_buffers()))
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.grads = [p.grad is None for p in model.parameters()]
        self.hooks = forward_hook_count(model)
        self.state = state_digest(model)
        self.training = model.training
        self.layer_types = _layer_types(model)
        self.logits = logits(model, tok)

    def assert_unchanged(self):
        model = self.model
        assert tensor_digest(list(model.named_parameters()) + list(model.named_buffers())) == self.weights
        assert [p.requires_grad for p in model.parameters()] == self.requires_grad
        assert [p.grad is None for p in model.parameters()] == self.grads
        assert forward_hook_count(model) == self.hooks
        assert state_digest(model) == self.state
        assert model.training == self.training
        assert _layer_types(model) == self.layer_types
        assert torch.equal(logits(model, self.tok), self.logits)


def _layer_types(model) -> Optional[list]:
    try:
        return [type(m) for m in plumbing.decoder_layers(model)]
    except plumbing.UnsupportedModelError:
        return None


@pytest.fixture(scope="module", params=["fresh", "edited"])
def model(request, tok):
    """A tiny Llama with no edits, or with one (shared by tests that must leave the model unchanged)."""
    model = tiny_llama()
    if request.param == "edited":
        edit(model, tok, REQUESTS[1])
    return model
