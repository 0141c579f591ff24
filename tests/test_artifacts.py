"""Edits as portable artifacts: save, load, remove, explain (tiny random models, offline)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from easyedit_baft import artifacts
from easyedit_baft import layers as plumbing
from easyedit_baft.artifacts import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ArtifactError,
    NoEditsError,
    explain,
    load_edits,
    remove_edits,
    render_heatmap,
    save_edits,
)
from easyedit_baft.baft_main import apply_baft_to_model
from easyedit_baft.hparams import BaFTHyperParams
from tiny_models import make_tokenizer

VOCAB_SIZE = 300
PROBE = "The capital of France is Rome. Unrelated text follows."
REQUESTS = [
    {"prompt": "The capital of France is", "target_new": "Rome"},
    {"prompt": "The Eiffel Tower stands in", "target_new": "Oslo"},
    {"prompt": "Water boils at", "target_new": "50"},
    {"prompt": "The author of Hamlet is", "target_new": "Tolstoy"},
]


# --- fixtures: a tiny Llama, a byte-level tokenizer, one saved edit ---------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run fastest on one thread; several threads stall when the CPUs are shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()  # byte-level, offline


def tiny_llama(seed: int = 0, hidden: int = 64, n_layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=64, n_layer=4, n_head=4, n_positions=128)
    return GPT2LMHeadModel(config).eval()


def hparams(**overrides) -> BaFTHyperParams:
    fields = dict(model_name="tiny-llama", layers=[1, 2], rank=4, n_steps=8, lr=0.05,
                  n_locality_prompts=4, n_context_prefixes=1, replay_edits=2)
    return BaFTHyperParams(**{**fields, **overrides})


def edit(model, tok, request: dict):
    apply_baft_to_model(model, tok, [request], hparams())


def logits(model, tok, text: str = PROBE) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


def has_hooks(model) -> bool:
    return any(layer._forward_hooks for layer in plumbing.decoder_layers(model))


@pytest.fixture(scope="module")
def edited(tok, tmp_path_factory):
    """A tiny Llama with one edit, and the directory its edits were saved to."""
    model = tiny_llama()
    edit(model, tok, REQUESTS[0])
    directory = save_edits(model, tmp_path_factory.mktemp("artifact") / "edits")
    return model, directory


@pytest.fixture
def artifact(edited, tmp_path) -> Path:
    """A private copy of the saved edits, free to damage."""
    return Path(shutil.copytree(edited[1], tmp_path / "edits"))


def read_config(directory: Path) -> dict:
    return json.loads((directory / CONFIG_NAME).read_text())


def write_config(directory: Path, config: dict, reseal: bool = True) -> None:
    """Write a changed config; reseal=True records its new checksum, so the deeper checks are reached."""
    if reseal:
        config = {**config, artifacts.CHECKSUM_FIELD: artifacts.config_checksum(config)}
    (directory / CONFIG_NAME).write_text(json.dumps(config))


def rewrite_weights(directory: Path, change) -> None:
    """Change the saved tensors and record the new file's sha256, so only the tensors are wrong."""
    path = directory / WEIGHTS_NAME
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    config = read_config(directory)
    config["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_config(directory, config)


# --- round trips ----------------------------------------------------------------------------------


def test_save_writes_two_files_and_config_fields(edited):
    model, directory = edited
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = read_config(directory)
    assert config["format_version"] == artifacts.FORMAT_VERSION
    assert config["base_model"]["model_type"] == "llama"
    assert config["base_model"]["hidden_size"] == 64 and config["base_model"]["num_hidden_layers"] == 4
    assert config["hparams"]["rank"] == 4 and config["layers_to_transform"] == [1, 2]
    assert config["edit_count"] == 1 and config["edit_log"][0]["target_new"] == "Rome"
    assert config["weights_sha256"] == hashlib.sha256((directory / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert config["config_sha256"] == artifacts.config_checksum(config)
    names = set(load_file(directory / WEIGHTS_NAME))
    assert {"layers.1.basis_usage", "layers.2.rotation", "layers.2.source_weight", "layers.2.gate_bias",
            "layers.2.frozen_rotation"} <= names


def test_load_on_fresh_model_gives_bit_identical_logits(edited, tok):
    model, directory = edited
    fresh = tiny_llama()
    base = logits(fresh, tok)
    load_edits(fresh, directory)
    assert not torch.equal(logits(model, tok), base)  # the edit changed something worth comparing
    assert torch.equal(logits(fresh, tok), logits(model, tok))
    assert plumbing.get_state(fresh).edit_count == 1


def test_sequential_edits_survive_round_trip_and_editing_continues(tok, tmp_path):
    original = tiny_llama()
    for request in REQUESTS[:3]:
        edit(original, tok, request)
    save_edits(original, tmp_path / "edits")
    loaded = load_edits(tiny_llama(), tmp_path / "edits")

    before, after = plumbing.get_state(original), plumbing.get_state(loaded)
    assert after.edit_count == 3
    assert [e["prompt"] for e in after.edit_log] == [r["prompt"] for r in REQUESTS[:3]]
    assert after.replay_memory == before.replay_memory
    assert torch.equal(after.interventions[1].basis_usage, before.interventions[1].basis_usage)
    assert torch.equal(logits(loaded, tok), logits(original, tok))

    # A fourth edit trains from the same state on both, so both end bit-identical.
    edit(original, tok, REQUESTS[3])
    edit(loaded, tok, REQUESTS[3])
    assert after.edit_count == 4 and len(after.replay_memory) == 4
    assert torch.equal(logits(loaded, tok), logits(original, tok))


def test_save_overwrites_an_existing_artifact_without_leftovers(edited, artifact):
    model, _ = edited
    (artifact / WEIGHTS_NAME).write_bytes(b"stale")
    save_edits(model, artifact)
    assert sorted(p.name for p in artifact.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    load_edits(tiny_llama(), artifact)


def test_save_without_edits_is_refused(tmp_path):
    with pytest.raises(NoEditsError, match="no BaFT edits"):
        save_edits(tiny_llama(), tmp_path / "edits")
    assert not (tmp_path / "edits").exists()


def test_remove_gives_bit_identical_logits_to_the_base_model(tok):
    model = tiny_llama()
    base = logits(model, tok)
    edit(model, tok, REQUESTS[0])
    assert not torch.equal(logits(model, tok), base)
    remove_edits(model)
    assert torch.equal(logits(model, tok), base)
    assert plumbing.get_state(model) is None and not has_hooks(model)
    remove_edits(model)  # removing again is a no-op


def test_loading_never_unpickles():
    source = Path(artifacts.__file__).read_text()
    assert "torch.load" not in source and "pickle" not in source


# --- refusals: each leaves the model exactly as it was -------------------------------------------


def _set(path: tuple, value):
    def change(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _edit_config(change):
    def damage(directory: Path):
        config = read_config(directory)
        change(config)
        write_config(directory, config)
    return damage


def _truncate(directory: Path):
    path = directory / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(directory: Path):
    data = bytearray((directory / WEIGHTS_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / WEIGHTS_NAME).write_bytes(bytes(data))


def _truncate_and_fix_checksum(directory: Path):
    _truncate(directory)
    _edit_config(_set(("weights_sha256",), hashlib.sha256((directory / WEIGHTS_NAME).read_bytes()).hexdigest()))(
        directory)


def _reshape_tensor(tensors):
    tensors["layers.1.source_weight"] = tensors["layers.1.source_weight"][:, :32].contiguous()


def _add_tensor(tensors):
    tensors["layers.3.source_bias"] = torch.zeros(4)


def _drop_tensor(tensors):
    del tensors["layers.2.basis_usage"]


def _half_precision(tensors):
    tensors["layers.1.gate_bias"] = tensors["layers.1.gate_bias"].half()


DAMAGED_ARTIFACTS = {
    "missing weights file": (lambda d: (d / WEIGHTS_NAME).unlink(), "edits.safetensors is missing"),
    "missing config file": (lambda d: (d / CONFIG_NAME).unlink(), "edit_config.json is missing"),
    "missing directory": (lambda d: shutil.rmtree(d), "not a directory"),
    "truncated weights": (_truncate, "truncated or corrupted"),
    "corrupted byte": (_flip_byte, "truncated or corrupted"),
    "truncated weights, checksum forged": (_truncate_and_fix_checksum, "does not parse"),
    "unknown format version": (_edit_config(_set(("format_version",), 99)), "format_version=99"),
    "older format version": (_edit_config(_set(("format_version",), 2)), "release that wrote it"),
    "not a BaFT artifact": (_edit_config(_set(("format",), "peft")), "format='peft'"),
    "config not JSON": (lambda d: (d / CONFIG_NAME).write_text("{not json"), "not valid JSON"),
    "config rank tampered": (_edit_config(_set(("hparams", "rank"), 8)), "tensor 'layers.1"),
    "config layers tampered": (_edit_config(_set(("hparams", "layers"), [1, 3])), "missing tensors"),
    "config layer out of range": (_edit_config(_set(("hparams", "layers"), [1, 9])), "out of range"),
    "config hparams unknown field": (_edit_config(_set(("hparams", "colour"), "red")), "colour"),
    "config edit_count not int": (_edit_config(_set(("edit_count",), "three")), "edit_count"),
    "config replay memory malformed": (_edit_config(_set(("replay_memory",), [{"ids": "abc"}])), "replay_memory"),
    "config checksum missing": (_edit_config(lambda c: c.pop("weights_sha256")), "weights_sha256"),
    "config base model missing": (_edit_config(lambda c: c.pop("base_model")), "base_model"),
    "tensor wrong shape": (lambda d: rewrite_weights(d, _reshape_tensor), "layers.1.source_weight"),
    "tensor extra": (lambda d: rewrite_weights(d, _add_tensor), "unexpected tensors"),
    "tensor missing": (lambda d: rewrite_weights(d, _drop_tensor), "missing tensors"),
    "tensor wrong dtype": (lambda d: rewrite_weights(d, _half_precision), "float16"),
}


def assert_refused_and_untouched(model, tok, directory: Path, match: str, **kwargs):
    before = logits(model, tok)
    state_before = plumbing.get_state(model)
    with pytest.raises(ArtifactError, match=match):
        load_edits(model, directory, **kwargs)
    assert plumbing.get_state(model) is state_before
    assert has_hooks(model) == (state_before is not None)
    assert torch.equal(logits(model, tok), before)


@pytest.mark.parametrize("case", sorted(DAMAGED_ARTIFACTS))
def test_damaged_artifact_is_refused(case, artifact, tok):
    damage, match = DAMAGED_ARTIFACTS[case]
    damage(artifact)
    assert_refused_and_untouched(tiny_llama(), tok, artifact, match)


WRONG_MODELS = {
    "GPT-2 architecture": (tiny_gpt2, "model_type='llama'"),
    "hidden size 32": (lambda: tiny_llama(hidden=32), "hidden_size=64"),
    "3 layers": (lambda: tiny_llama(n_layers=3), "num_hidden_layers=4"),
    "other weights": (lambda: tiny_llama(seed=1), "fingerprint"),
}


@pytest.mark.parametrize("case", sorted(WRONG_MODELS))
def test_wrong_base_model_is_refused(case, edited, tok):
    make_model, match = WRONG_MODELS[case]
    assert_refused_and_untouched(make_model(), tok, edited[1], match)


def test_fingerprint_check_can_be_skipped_but_architecture_checks_cannot(edited, tok):
    load_edits(tiny_llama(seed=1), edited[1], verify_base_model=False)
    assert_refused_and_untouched(tiny_llama(hidden=32), tok, edited[1], "hidden_size", verify_base_model=False)


def test_fingerprint_ignores_float_width_but_not_weights():
    model = tiny_llama()
    fingerprint = artifacts.base_model_fingerprint(model)
    assert artifacts.base_model_fingerprint(tiny_llama().to(torch.bfloat16)) == fingerprint
    assert artifacts.base_model_fingerprint(tiny_llama(seed=1)) != fingerprint


def test_model_already_edited_is_refused(edited, tok):
    model, directory = edited
    saved = {i: {k: v.clone() for k, v in m.state_dict().items()}
             for i, m in plumbing.get_state(model).interventions.items()}
    assert_refused_and_untouched(model, tok, directory, "already carries BaFT edits")
    for i, module in plumbing.get_state(model).interventions.items():
        assert all(torch.equal(v, saved[i][k]) for k, v in module.state_dict().items())


# Fields changed by hand without a new checksum: each changes what the loaded edit computes or records.
TAMPERED_FIELDS = {
    "gate learned -> ones": (("hparams", "gate"), "ones"),
    "lr": (("hparams", "lr"), 0.5),
    "gate temperature": (("hparams", "gate_temperature"), 9.0),
    "layers_to_transform": (("layers_to_transform",), [1]),
    "r": (("r",), 8),
    "edit_count": (("edit_count",), 7),
    "replay memory": (("replay_memory",), []),
    "edit log": (("edit_log",), []),
    "base model name": (("base_model_name_or_path",), "other-model"),
    "checksum itself": (("config_sha256",), "0" * 64),
}


@pytest.mark.parametrize("case", sorted(TAMPERED_FIELDS))
def test_a_config_field_changed_after_saving_is_refused(case, artifact, tok):
    path, value = TAMPERED_FIELDS[case]
    config = read_config(artifact)
    _set(path, value)(config)
    write_config(artifact, config, reseal=False)
    assert_refused_and_untouched(tiny_llama(), tok, artifact, "changed after saving")


def test_a_config_without_its_checksum_is_refused(artifact, tok):
    config = read_config(artifact)
    del config["config_sha256"]
    write_config(artifact, config, reseal=False)
    assert_refused_and_untouched(tiny_llama(), tok, artifact, "config_sha256")


def test_key_order_and_spacing_of_the_config_do_not_count(artifact, tok):
    config = read_config(artifact)
    (artifact / CONFIG_NAME).write_text(json.dumps(dict(reversed(list(config.items()))), indent=7))
    load_edits(tiny_llama(), artifact)


def _poison(tensors):
    name = next(n for n, t in sorted(tensors.items()) if t.is_floating_point() and t.numel())
    tensors[name].view(-1)[0] = float("nan")


def test_non_finite_tensor_is_refused(artifact, tok):
    rewrite_weights(artifact, _poison)
    assert_refused_and_untouched(tiny_llama(), tok, artifact, "NaN or infinite")


def test_replay_token_id_outside_the_vocabulary_is_refused(tok, tmp_path):
    model = tiny_llama()
    for request in REQUESTS[:2]:
        edit(model, tok, request)
    directory = save_edits(model, tmp_path / "edits")
    config = read_config(directory)
    config["replay_memory"][0]["ids"][-1] = VOCAB_SIZE
    write_config(directory, config)
    assert_refused_and_untouched(tiny_llama(), tok, directory, r"replay_memory\[0\].ids.*300 tokens")


@pytest.mark.parametrize("name", [CONFIG_NAME, WEIGHTS_NAME])
def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(name, artifact, tok):
    import os
    import threading

    (artifact / name).unlink()
    os.mkfifo(artifact / name)
    outcome = {}

    def load():
        try:
            load_edits(tiny_llama(), artifact)
        except ArtifactError as err:
            outcome["error"] = str(err)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "load_edits blocked on a FIFO"
    assert "not a regular file" in outcome["error"]


def test_save_refuses_non_finite_edits_and_writes_nothing(tok, tmp_path):
    model = tiny_llama()
    edit(model, tok, REQUESTS[0])
    with torch.no_grad():
        next(plumbing.get_state(model).interventions[1].parameters()).view(-1)[0] = float("inf")
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        save_edits(model, tmp_path / "edits")
    assert not (tmp_path / "edits").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_saved_files_get_the_users_umask(edited, tmp_path, umask, mode):
    import os

    previous = os.umask(umask)
    try:
        directory = save_edits(edited[0], tmp_path / "edits")
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()} == {CONFIG_NAME: mode, WEIGHTS_NAME: mode}


def test_relative_locality_source_is_recorded_as_the_yaml_spelled_it(tok, tmp_path):
    import yaml

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompts.txt").write_text("The sky is\nMy dog likes\n")
    fields = dict(alg_name="BaFT", model_name="tiny-llama", layers=[1], rank=4, n_steps=4,
                  n_locality_prompts=2, locality_source="../data/prompts.txt")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "baft.yaml").write_text(yaml.safe_dump(fields))
    hp = BaFTHyperParams.from_hparams(tmp_path / "configs" / "baft.yaml")
    assert hp.locality_source == str(tmp_path / "data" / "prompts.txt")  # read from the YAML's folder
    model = tiny_llama()
    apply_baft_to_model(model, tok, [REQUESTS[0]], hp)
    config = read_config(save_edits(model, tmp_path / "edits"))
    assert config["hparams"]["locality_source"] == "../data/prompts.txt"
    assert str(tmp_path) not in json.dumps(config)
    load_edits(tiny_llama(), tmp_path / "edits")


def test_base_model_name_is_the_model_edited_or_the_name_given(edited, tmp_path):
    model, _ = edited
    model.config._name_or_path = "/models/the-one-edited"
    try:
        assert read_config(save_edits(model, tmp_path / "a"))["base_model_name_or_path"] == "/models/the-one-edited"
        named = save_edits(model, tmp_path / "b", base_model_name="smollm2-135m")
        assert read_config(named)["base_model_name_or_path"] == "smollm2-135m"
    finally:
        model.config._name_or_path = ""


def test_read_artifact_checks_without_a_model(edited, artifact):
    saved = artifacts.read_artifact(edited[1])
    assert saved.edit_count == 1 and saved.hparams.rank == 4
    (artifact / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifacts.read_artifact(artifact)


# --- explain ----------------------------------------------------------------------------------------


def test_explain_gives_per_token_gates_in_unit_interval(edited, tok, tmp_path):
    model, _ = edited
    prompt = REQUESTS[0]["prompt"]
    explanation = explain(model, tok, prompt)
    n_tokens = len(tok(prompt)["input_ids"])
    assert explanation.tokens == list(prompt)  # one byte per token with this tokenizer
    assert sorted(explanation.gates) == [1, 2]
    for gates in explanation.gates.values():
        assert gates.shape == (n_tokens, 4) and gates.dtype == np.float32
        assert ((gates >= 0) & (gates <= 1)).all()
    assert all(not m.record_gates and m.last_gates is None for m in plumbing.get_state(model).interventions.values())
    json.dumps(explanation.to_dict())

    png = render_heatmap(explanation, tmp_path / "gates.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_explain_reads_gates_even_while_interventions_are_disabled(edited, tok):
    model, _ = edited
    expected = explain(model, tok, "Water")
    with plumbing.interventions_disabled(model):
        disabled = explain(model, tok, "Water")
        assert plumbing.get_state(model).enabled is False
    assert all(np.array_equal(expected.gates[i], disabled.gates[i]) for i in expected.gates)


def test_explain_needs_edits(tok):
    with pytest.raises(NoEditsError):
        explain(tiny_llama(), tok, "Water")


def _png_size(path: Path) -> tuple:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_explain_on_a_long_prompt_reads_and_draws_only_its_last_tokens(edited, tok, tmp_path):
    from easyedit_baft.explain import EXPLAIN_MAX_TOKENS, HEATMAP_MAX_TOKENS, shown_tokens

    model, _ = edited
    prompt = "x" * 3000 + REQUESTS[0]["prompt"]  # one token per byte with this tokenizer
    explanation = explain(model, tok, prompt)
    assert explanation.n_cut == len(prompt) - EXPLAIN_MAX_TOKENS
    assert "".join(explanation.tokens) == prompt[-EXPLAIN_MAX_TOKENS:]
    assert all(g.shape == (EXPLAIN_MAX_TOKENS, 4) for g in explanation.gates.values())
    assert shown_tokens(explanation) == (HEATMAP_MAX_TOKENS, len(prompt))
    short = render_heatmap(explain(model, tok, prompt[-HEATMAP_MAX_TOKENS:]), tmp_path / "short.png")
    long = render_heatmap(explanation, tmp_path / "long.png")
    assert _png_size(long)[0] == _png_size(short)[0]  # as wide as a prompt of HEATMAP_MAX_TOKENS tokens


def test_explain_max_tokens_must_be_positive(edited, tok):
    with pytest.raises(ValueError, match="max_tokens=0"):
        explain(edited[0], tok, "Water", max_tokens=0)


def test_a_batch_block_its_saved_hparams_cannot_make_is_refused(tok, tmp_path):
    model = tiny_llama()
    apply_baft_to_model(model, tok, REQUESTS[:2], hparams(rank=3, rank_per_request=True))  # one block of 6
    directory = save_edits(model, tmp_path / "edits")
    config = read_config(directory)
    config["hparams"]["rank"] = 4  # 6 bases: no number of requests x rank 4
    write_config(directory, config)
    assert_refused_and_untouched(tiny_llama(), tok, directory, r"block of 6 bases, which rank=4")
