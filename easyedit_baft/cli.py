"""easyedit-baft: the command line (demo, edit, apply, explain, compare)."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HPARAMS = REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml"
COMPARE_SCRIPT = REPO_ROOT / "examples" / "compare_methods.py"


def _default_data() -> Path:
    from .records import default_data_dir

    return default_data_dir() / "zsre" / "zsre_mend_eval_portability_gpt4.json"


def cmd_demo(args) -> None:
    from .demo import run_demo
    from .host import host_available
    from .records import load_edit_cases

    data = Path(args.data or _default_data())
    cases = load_edit_cases(data, args.n)
    run_demo(cases, str(args.hparams), args.model, Path(args.out))
    if not host_available():
        print("EasyEdit not found: set EASYEDIT_ROOT to an EasyEdit clone (with its dependencies installed) "
              "to run the same edits through BaseEditor next to ROME, MEMIT and GRACE.")
        return
    print("Running the same edits through EasyEdit's BaseEditor next to ROME, MEMIT and GRACE ...")
    compare_args = ["--data", str(data), "--n", str(args.n), "--baft-hparams", str(args.hparams),
                    "--out", str(Path(args.out).resolve() / "compare")]
    _run_compare_script(compare_args + (["--model", args.model] if args.model else []))


def cmd_edit(args) -> None:
    from tqdm.auto import tqdm

    from . import metrics
    from .artifacts import save_edits
    from .baft_main import apply_baft_to_model
    from .hparams import BaFTHyperParams
    from .model_loading import load_model
    from .records import edit_request, load_edit_cases

    cases = load_edit_cases(args.requests, args.n)
    hparams = BaFTHyperParams.from_hparams(args.hparams)
    model, tok = load_model(args.model)
    # Sequential by default: the saved artifact then carries every edit.
    for case in tqdm(cases, desc="editing"):
        model, _ = apply_baft_to_model(model, tok, [edit_request(case)], hparams)
    scores = [metrics.target_accuracy(model, tok, c["prompt"], c["target_new"]) for c in cases]
    print(f"{len(cases)} edits; mean reliability {sum(scores) / len(scores):.3f}")
    for case, score in zip(cases, scores):
        print(f"  {score:.2f}  {case['prompt']!r} -> {case['target_new']!r}")
    if args.save:
        print(f"saved to {save_edits(model, args.save)}")


def cmd_apply(args) -> None:
    from . import metrics
    from .artifacts import load_edits
    from .model_loading import load_model

    model, tok = load_model(args.model)
    prompts = args.prompt or []
    if not prompts:
        config = json.loads((Path(args.edits) / "edit_config.json").read_text(encoding="utf-8"))
        prompts = [entry["prompt"] for entry in config.get("edit_log", [])]
    before = [metrics.greedy_answer(model, tok, p, args.max_new_tokens) for p in prompts]
    load_edits(model, args.edits)
    for prompt, old in zip(prompts, before):
        new = metrics.greedy_answer(model, tok, prompt, args.max_new_tokens)
        print(f"{prompt}\n  without edits: {old}\n  with edits:    {new}")


def cmd_explain(args) -> None:
    from .artifacts import explain, load_edits, render_heatmap
    from .model_loading import load_model

    model, tok = load_model(args.model)
    load_edits(model, args.edits)
    explanation = explain(model, tok, args.prompt)
    path = render_heatmap(explanation, args.out)
    for layer, gates in explanation.gates.items():
        print(f"layer {layer}: peak gate {gates.max():.3f}, mean gate {gates.mean():.3f}")
    print(f"heatmap written to {path}")


def _run_compare_script(argv) -> None:
    if not COMPARE_SCRIPT.is_file():
        sys.exit(f"{COMPARE_SCRIPT} is missing; the comparison needs the repository checkout's examples/")
    sys.path.insert(0, str(COMPARE_SCRIPT.parent))  # the script imports its sibling modules
    saved_argv, sys.argv = sys.argv, [str(COMPARE_SCRIPT)] + list(argv)
    try:
        runpy.run_path(str(COMPARE_SCRIPT), run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    finally:
        sys.argv = saved_argv


def cmd_compare(args) -> None:
    from .host import host_available

    if not host_available():
        sys.exit("compare runs ROME, MEMIT and GRACE through EasyEdit's BaseEditor, and no EasyEdit was "
                 "found: run from an EasyEdit checkout or set EASYEDIT_ROOT to one (see docs/HOST_INTEGRATION.md)")
    _run_compare_script(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easyedit-baft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = "local HF model directory; default: the embedded SmolLM2-135M-Instruct"

    demo = sub.add_parser("demo", help="edit the embedded model with real facts and show before/after")
    demo.add_argument("--data", help="ZsRE/CounterFact/KnowEdit JSON; default: ZsRE eval in ../shared/data")
    demo.add_argument("--n", type=int, default=5, help="number of facts to edit (default 5)")
    demo.add_argument("--hparams", default=str(DEFAULT_HPARAMS))
    demo.add_argument("--model", help=model_help)
    demo.add_argument("--out", default="results/demo", help="directory for demo.json, demo.md, demo.png")
    demo.set_defaults(func=cmd_demo)

    edit = sub.add_parser("edit", help="apply edits from a requests file, one after another")
    edit.add_argument("--requests", required=True, help="ZsRE, CounterFact, KnowEdit or [{prompt, target_new}] JSON")
    edit.add_argument("--n", type=int, help="only the first n records")
    edit.add_argument("--hparams", default=str(DEFAULT_HPARAMS))
    edit.add_argument("--model", help=model_help)
    edit.add_argument("--save", help="directory to save the edits to (safetensors + JSON)")
    edit.set_defaults(func=cmd_edit)

    apply = sub.add_parser("apply", help="load saved edits onto a model and generate")
    apply.add_argument("edits", help="directory written by `edit --save`")
    apply.add_argument("--model", help=model_help)
    apply.add_argument("--prompt", action="append", help="prompt to answer (repeatable); default: the edited prompts")
    apply.add_argument("--max-new-tokens", type=int, default=12)
    apply.set_defaults(func=cmd_apply)

    explain = sub.add_parser("explain", help="heatmap of which bases a prompt opens")
    explain.add_argument("edits", help="directory written by `edit --save`")
    explain.add_argument("--prompt", required=True)
    explain.add_argument("--model", help=model_help)
    explain.add_argument("--out", default="explain.png", help="PNG path (default explain.png)")
    explain.set_defaults(func=cmd_explain)

    compare = sub.add_parser("compare", help="BaFT next to ROME, MEMIT and GRACE through EasyEdit's BaseEditor")
    compare.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for examples/compare_methods.py")
    compare.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.func(args)


if __name__ == "__main__":
    main()
