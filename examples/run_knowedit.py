"""KnowEdit through EasyEdit's BaseEditor, with BaFT among the methods.

Takes the arguments of the host's examples/run_knowedit_llama2.py, so existing command lines work:

    EASYEDIT_ROOT=/path/to/EasyEdit python examples/run_knowedit.py --editing_method BaFT \
        --hparams_dir hparams/BaFT/smollm2-135m.yaml --datatype zsre \
        --data_dir ../shared/data/knowedit/ZsRE/ZsRE-test-all.json --ds_size 20

--datatype: zsre, counterfact or recent (locality and portability) or wikibio (locality only).
The model is the hparams' model_name; 'smollm2-135m' names the embedded model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from host_setup import load_hparams, require_host, resolve_model, set_threads

from easyedit_baft.metrics import fluency_without_punkt, knowedit_summary, record_scores  # noqa: E402
from easyedit_baft.records import edit_kwargs  # noqa: E402

LOG = logging.getLogger("run_knowedit")
DATATYPES = ("zsre", "counterfact", "recent", "wikibio")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--editing_method", required=True, type=str, help="BaFT, ROME, MEMIT, GRACE, FT, ...")
    parser.add_argument("--hparams_dir", required=True, type=str, help="the method's hparams YAML file")
    parser.add_argument("--data_dir", required=True, type=str, help="a KnowEdit JSON file")
    parser.add_argument("--ds_size", default=None, type=int, help="records from the start of the file")
    parser.add_argument("--metrics_save_dir", default="./output", type=str)
    parser.add_argument("--datatype", default=None, type=str, help=f"one of {list(DATATYPES)}")
    parser.add_argument("--train_data_path", type=str, help="IKE only: its in-context examples")
    parser.add_argument("--pre_file", default=None, type=str,
                        help="cache of pre-edit metrics (default: METRICS_SAVE_DIR/<model>_<datatype>_pre_edit.json)")
    parser.add_argument("--sequential_edit", action="store_true", help="keep every edit (continual editing)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def knowedit_inputs(host, args) -> dict:
    """BaseEditor.edit arguments from the host's KnowEditDataset; WikiBio scores locality only."""
    items = list(host.KnowEditDataset(args.data_dir, size=args.ds_size))
    if not items:
        sys.exit(f"--data_dir {args.data_dir} holds no records")
    kwargs = edit_kwargs(items, "knowedit_item")
    if args.datatype == "wikibio":
        kwargs["portability_inputs"] = None
        kwargs["locality_inputs"] = {k: v for k, v in (kwargs["locality_inputs"] or {}).items()
                                     if k == "Relation_Specificity"} or None
    return kwargs


def ike_train_ds(host, args, hparams):
    """IKE's in-context examples: the training file, embedded once by the host."""
    if not args.train_data_path:
        sys.exit("--editing_method IKE needs --train_data_path (KnowEdit training records)")
    from sentence_transformers import SentenceTransformer

    from easyeditor.models.ike import encode_ike_facts

    train_ds = host.KnowEditDataset(args.train_data_path)
    device = "cpu" if str(hparams.device) == "cpu" else f"cuda:{hparams.device}"
    encode_ike_facts(SentenceTransformer(hparams.sentence_model_name).to(device), train_ds, hparams)
    return train_ds


def print_summary(metrics: list) -> dict:
    """KnowEdit's own summary, printed as the host's KnowEdit script prints it (x 100)."""
    summary = knowedit_summary([record_scores(m["post"]) for m in metrics])
    lines = [("Edit_Succ", summary["edit_succ"]), ("Overall_portability", summary["portability"])]
    lines += [(f"Portability_{k}", v) for k, v in summary["portability_kinds"].items()]
    lines += [("Overall_locality", summary["locality"])]
    lines += [(f"Locality_{k}", v) for k, v in summary["locality_kinds"].items()]
    lines += [("Fluency", summary["fluency"]), ("HM(Edit_Succ, portability, locality)", summary["hm"])]
    for label, value in lines:
        if value is not None:
            print(f"{label}: {100 * value:.2f}")
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.datatype not in DATATYPES:
        sys.exit(f"--datatype {args.datatype!r}: choose one of {list(DATATYPES)}")
    set_threads(args.threads)
    host = require_host()
    if fluency_without_punkt():
        LOG.warning("NLTK's punkt_tab data is missing: fluency's words are split without sentence "
                    "splitting first (`python -m nltk.downloader punkt_tab` restores the host's exact behaviour)")

    import yaml

    model_name = yaml.safe_load(Path(args.hparams_dir).read_text(encoding="utf-8"))["model_name"]
    hparams = load_hparams(host, args.editing_method, Path(args.hparams_dir), resolve_model(model_name))
    inputs = knowedit_inputs(host, args)

    save_dir = Path(args.metrics_save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model_tag = Path(hparams.model_name).name
    pre_file = Path(args.pre_file or save_dir / f"{model_tag}_{args.datatype}_pre_edit.json")
    pre_edit = json.loads(pre_file.read_text(encoding="utf-8")) if pre_file.is_file() else None
    if pre_edit is not None and len(pre_edit) != len(inputs["prompts"]):
        sys.exit(f"--pre_file {pre_file} holds {len(pre_edit)} records, not {len(inputs['prompts'])}; delete it")

    train_ds = ike_train_ds(host, args, hparams) if args.editing_method == "IKE" else None
    editor = host.BaseEditor.from_hparams(hparams)
    metrics, _, _ = editor.edit(**inputs, train_ds=train_ds, pre_file=str(pre_file), pre_edit=pre_edit,
                                sequential_edit=args.sequential_edit, test_generation=True, verbose=False)
    result_path = save_dir / f"{args.editing_method}_{args.datatype}_{model_tag}_results.json"
    result_path.write_text(json.dumps(metrics, indent=1, default=float), encoding="utf-8")
    LOG.info("per-record metrics in %s", result_path)
    print_summary(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
