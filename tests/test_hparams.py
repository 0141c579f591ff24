"""BaFTHyperParams: loading from YAML/JSON and validation errors that name the field."""

from __future__ import annotations

import json

import pytest
import yaml

from easyedit_baft.hparams import ALG_NAME, BaFTHyperParams, HParamsError

CONFIG = {"alg_name": "BaFT", "model_name": "./hugging_cache/llama-2-7b", "device": 0,
          "layers": [12, 10], "rank": 6, "lr": "1e-3", "n_steps": 30, "gate_temperature": 0.5}


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_from_hparams_reads_yaml_yml_and_json(tmp_path, suffix):
    dump = json.dumps if suffix == ".json" else yaml.safe_dump
    hp = BaFTHyperParams.from_hparams(write(tmp_path / f"baft{suffix}", dump(CONFIG)))
    assert (hp.alg_name, hp.model_name, hp.device, hp.rank, hp.n_steps) == ("BaFT", CONFIG["model_name"], 0, 6, 30)
    assert hp.layers == [10, 12]  # sorted
    assert hp.lr == 1e-3 and isinstance(hp.lr, float)  # YAML's '1e-3' string becomes a number
    assert hp.gate_temperature == 0.5


def test_bare_name_gets_yaml_suffix_as_in_easyedit(tmp_path):
    write(tmp_path / "llama-7b.yaml", yaml.safe_dump(CONFIG))
    assert BaFTHyperParams.from_hparams(str(tmp_path / "llama-7b")).rank == 6


def test_relative_locality_source_is_read_from_the_files_folder_not_the_working_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "hparams" / "BaFT"
    config_dir.mkdir(parents=True)
    write(config_dir / "baft.yaml", yaml.safe_dump({**CONFIG, "locality_source": "../../data/train.json"}))
    monkeypatch.chdir(config_dir)
    hp = BaFTHyperParams.from_hparams("baft.yaml")
    assert hp.locality_source == str(tmp_path / "data" / "train.json")


def test_to_dict_round_trips_through_from_dict():
    hp = BaFTHyperParams.from_dict({k: v for k, v in CONFIG.items()})
    assert BaFTHyperParams.from_dict(hp.to_dict()) == hp


def test_to_dict_drops_an_unserialisable_model_tokenizer_tuple():
    hp = BaFTHyperParams(model_name=(object(), object()))
    assert hp.to_dict()["model_name"] is None
    json.dumps(hp.to_dict())


def test_missing_file_is_refused_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        BaFTHyperParams.from_hparams(tmp_path / "nothere.yaml")


@pytest.mark.parametrize("name,text", [
    ("broken.yaml", "alg_name: BaFT\nlayers: [1, 2\n"),
    ("broken.json", '{"alg_name": "BaFT",'),
])
def test_file_that_does_not_parse_is_refused(tmp_path, name, text):
    with pytest.raises(HParamsError, match="does not parse"):
        BaFTHyperParams.from_hparams(write(tmp_path / name, text))


def test_file_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(HParamsError, match="mapping"):
        BaFTHyperParams.from_hparams(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


@pytest.mark.parametrize("alg_name", ["ROME", "baft", None])
def test_file_with_wrong_alg_name_is_refused(tmp_path, alg_name):
    config = {**CONFIG, "alg_name": alg_name}
    with pytest.raises(HParamsError, match=f"alg_name={alg_name!r}"):
        BaFTHyperParams.from_hparams(write(tmp_path / "other.yaml", yaml.safe_dump(config)))


def test_constructor_with_wrong_alg_name_is_refused():
    with pytest.raises(HParamsError, match="alg_name='ROME'"):
        BaFTHyperParams(model_name="m", alg_name="ROME")
    assert ALG_NAME == "BaFT"


def test_unknown_field_is_refused_naming_it(tmp_path):
    config = {**CONFIG, "rnak": 4}
    with pytest.raises(HParamsError, match="rnak"):
        BaFTHyperParams.from_hparams(write(tmp_path / "typo.yaml", yaml.safe_dump(config)))


def test_missing_model_name_is_refused():
    with pytest.raises(HParamsError, match="model_name"):
        BaFTHyperParams.from_dict({"alg_name": "BaFT"})


BAD_VALUES = [
    ("model_name", ""), ("model_name", 3), ("device", "tpu"), ("device", -1), ("device", True),
    ("fp16", "yes"), ("batch_size", 0), ("max_length", 2.5), ("layers", []), ("layers", [1, 1]),
    ("layers", [-1]), ("layers", "1"), ("layers", [True]), ("rank", 0), ("rank", 1.5), ("lr", 0),
    ("lr", "fast"), ("lr", float("nan")), ("n_steps", 0), ("early_stop", "never"),
    ("early_stop_loss", 0.0), ("early_stop_locality", 0.0), ("early_stop_locality", "low"), ("weight_decay", -0.1), ("gate", "sigmoid"), ("gate_temperature", 0),
    ("gate_init_std", -1), ("lambda_loc", -1), ("kl_weight", float("inf")), ("lambda_lb", "x"),
    ("locality_source", ""), ("n_locality_prompts", -1), ("n_subject_swaps", -1), ("n_subject_swaps", 1.5),
    ("relation_templates", "answers"), ("n_context_prefixes", None), ("screen_negatives", -1),
    ("replay_edits", -2), ("grow_rank", -1), ("grow_rank", 2.0), ("seed", -1), ("seed", 2**32), ("gate_input_norm", 1),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_invalid_value_is_refused_naming_the_field(field, value):
    with pytest.raises(HParamsError, match=f"^{field}="):
        BaFTHyperParams(**{"model_name": "m", field: value})


def test_screen_negatives_needs_a_budget_to_hold_rows_to():
    with pytest.raises(HParamsError, match="^screen_negatives=8 .*early_stop_locality"):
        BaFTHyperParams(model_name="m", screen_negatives=8)
    with pytest.raises(HParamsError, match="^screen_negatives=8 .*lambda_loc"):
        BaFTHyperParams(model_name="m", screen_negatives=8, early_stop_locality=0.005, lambda_loc=0.0)
    with pytest.raises(HParamsError, match=r"^screen_negatives=8 .*layers=\[1, 2\]"):
        BaFTHyperParams(model_name="m", screen_negatives=8, early_stop_locality=0.005, layers=[1, 2])
    assert BaFTHyperParams(model_name="m", screen_negatives=8, early_stop_locality=0.005).screen_negatives == 8


def test_cap_locality_bounds_a_step_beyond_the_budget():
    with pytest.raises(HParamsError, match="^cap_locality=0.03 .*early_stop_locality"):
        BaFTHyperParams(model_name="m", cap_locality=0.03)
    with pytest.raises(HParamsError, match="^cap_locality=0.001 .*>= 0.005"):
        BaFTHyperParams(model_name="m", early_stop_locality=0.005, cap_locality=0.001)
    assert BaFTHyperParams(model_name="m", early_stop_locality=0.005, cap_locality="3e-2").cap_locality == 0.03


def test_single_int_layer_becomes_a_list():
    assert BaFTHyperParams(model_name="m", layers=5).layers == [5]
