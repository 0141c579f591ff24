"""easyedit-baft: the command line (demo, edit, apply, explain, compare).

Exit status: 0 done; 1 `edit` ran but some edits do not hold; 2 an error, told in one line
(--debug shows its traceback). Every input is checked before the model loads.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import sys
import tempfile
from pathlib import Path

from .records import DEMO_FACTS, shipped_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HPARAMS = shipped_config()
COMPARE_SCRIPT = REPO_ROOT / "examples" / "compare_methods.py"

EXIT_EDITS_DO_NOT_HOLD = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A wrong argument or input: the message names the option, the value and the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and exits; a one-line error is enough
        raise CLIError(f"{message}; see {self.prog} --help")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a whole number >= 1")
    return value


# --- checks that run before the model loads ---------------------------------------------------------


def _load_hparams(path: str):
    from .hparams import BaFTHyperParams

    try:
        return BaFTHyperParams.from_hparams(path)
    except (OSError, ValueError) as err:
        raise CLIError(f"--hparams {path}: {err}") from err


def _load_cases(path, n, option: str):
    from .records import edit_request, load_edit_cases
    from .requests import validate_requests

    try:
        cases = load_edit_cases(path, n)
        for case in cases:  # each is edited on its own, as validate_requests checks one
            validate_requests([edit_request(case)])
    except KeyError as err:
        raise CLIError(f"{option} {path}: a record lacks the field {err}; give records of one known format") from err
    except (OSError, ValueError) as err:
        raise CLIError(f"{option} {path}: {err}") from err
    return cases


def _check_editing_inputs(hparams, hparams_path: str, model_name) -> dict:
    """Everything about hparams that can be checked without the weights; returns load_model's placement."""
    from .model_loading import check_hparams_fit, placement, resolve_model_path
    from .prompt_sources import unrelated_prompts

    try:
        unrelated_prompts(hparams.locality_source)
        where = placement(hparams)
    except (OSError, ValueError) as err:
        raise CLIError(f"--hparams {hparams_path}: {err}") from err
    try:
        model_path = resolve_model_path(model_name)
    except (OSError, ValueError, ImportError) as err:
        raise CLIError(f"--model: {err}") from err
    try:
        check_hparams_fit(hparams, model_path)
    except ValueError as err:
        raise CLIError(f"--hparams {hparams_path}: {err}") from err
    return where


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(path: Path, option: str) -> None:
    """Create and delete a probe file where the file `path` will be written: the real test, whoever runs it."""
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise CLIError(f"{option} {path}: {folder} is a file, not a directory; choose a path in a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".easyedit-baft-probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise CLIError(f"{option} {path}: cannot write in {folder} ({err.strerror}); choose a directory "
                       "you can write to") from err


def _check_save_path(save: str, overwrite: bool) -> Path:
    """Refuse, before any training, a save path that would lose work or fail after it."""
    from .artifacts import CONFIG_NAME, WEIGHTS_NAME

    path = Path(save)
    if path.exists() and not path.is_dir():
        raise CLIError(f"--save {save}: it is a file, not a directory; give a directory for the edits")
    if path.is_dir():
        holds_edits = (path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists()
        if holds_edits and not overwrite:
            raise CLIError(f"--save {save}: it already holds saved edits; pass --overwrite to replace them, "
                           "or choose another directory")
        if not holds_edits and any(path.iterdir()):
            raise CLIError(f"--save {save}: the directory holds other files; choose a new or empty directory")
    _check_writable(path / CONFIG_NAME, "--save")
    return path


def _check_output_file(out: str, option: str) -> Path:
    path = Path(out)
    if path.is_dir():
        raise CLIError(f"{option} {out}: it is a directory; give a file name, e.g. {path / 'explain.png'}")
    _check_writable(path, option)
    return path


def _read_artifact(directory: str):
    from .artifacts import ArtifactError, read_artifact

    try:
        return read_artifact(directory)
    except ArtifactError as err:
        raise CLIError(f"{directory}: {err}") from err


def _load_onto(model, directory: str, saved) -> None:
    """Attach the artifact read (and checked) before the model loaded: it is not read twice."""
    from .artifacts import ArtifactError, attach_saved

    try:
        attach_saved(model, saved)
    except ArtifactError as err:
        raise CLIError(f"{directory}: {err}") from err


def _device(option_value: str) -> str:
    from .model_loading import DeviceError, resolve_device

    try:
        return resolve_device(option_value)
    except DeviceError as err:
        raise CLIError(f"--device: {err}") from err


def _model_label(model_name) -> str:
    from .model_loading import EMBEDDED_MODEL_NAME

    return model_name or EMBEDDED_MODEL_NAME


# --- commands --------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .host import host_available

    data = Path(args.data) if args.data else DEMO_FACTS
    cases = _load_cases(data, args.n, "--data")
    _check_editing_inputs(_load_hparams(args.hparams), args.hparams, args.model)
    _check_writable(Path(args.out) / "demo.json", "--out")
    run_demo(cases, str(args.hparams), args.model, Path(args.out))
    if not host_available():
        print("EasyEdit not found: set EASYEDIT_ROOT to an EasyEdit clone (with its dependencies installed) "
              "to run the same edits through BaseEditor next to ROME, MEMIT and GRACE.")
        return 0
    print("Running the same edits through EasyEdit's BaseEditor next to ROME, MEMIT and GRACE ...")
    compare_args = ["--data", str(data), "--n", str(args.n), "--baft-hparams", str(args.hparams),
                    "--out", str(Path(args.out).resolve() / "compare")]
    _run_compare_script(compare_args + (["--model", args.model] if args.model else []))
    return 0


def cmd_edit(args) -> int:
    from tqdm.auto import tqdm

    from . import metrics
    from .artifacts import save_edits
    from .baft_main import apply_baft_to_model
    from .model_loading import load_model
    from .records import edit_request

    requests_path = args.requests or DEMO_FACTS
    cases = _load_cases(requests_path, args.n, "--requests")
    hparams = _load_hparams(args.hparams)
    save = _check_save_path(args.save, args.overwrite) if args.save else None
    where = _check_editing_inputs(hparams, args.hparams, args.model)

    model, tok = load_model(args.model, **where)
    # Sequential: the saved artifact then carries every edit.
    for case in tqdm(cases, desc="editing"):
        model, _ = apply_baft_to_model(model, tok, [edit_request(case)], hparams)
    scores = [metrics.target_accuracy(model, tok, c["prompt"], c["target_new"]) for c in cases]
    print(f"{len(cases)} edits; mean reliability {sum(scores) / len(scores):.3f}")
    for case, score in zip(cases, scores):
        print(f"  {score:.2f}  {case['prompt']!r} -> {case['target_new']!r}")

    failing = [(case, score) for case, score in zip(cases, scores) if score < 1.0]
    reason = ""
    if failing:
        case, score = failing[0]
        reason = (f"{len(failing)} of {len(cases)} edits do not hold (the first: {case['prompt']!r:.60} -> "
                  f"{case['target_new']!r:.30} scores {score:.2f}); raise n_steps or lr in the hparams, "
                  "or make fewer edits")
    if save is not None:
        if failing and not args.force:
            print(f"easyedit-baft edit: error: {reason}; nothing saved to {save} (pass --force to save them anyway)",
                  file=sys.stderr)
            return EXIT_EDITS_DO_NOT_HOLD
        print(f"saved to {save_edits(model, save, base_model_name=_model_label(args.model))}")
    if failing:
        print(f"easyedit-baft edit: error: {reason}", file=sys.stderr)
        return EXIT_EDITS_DO_NOT_HOLD
    return 0


def cmd_apply(args) -> int:
    from . import layers as plumbing
    from . import metrics
    from .model_loading import load_model

    saved = _read_artifact(args.edits)
    prompts = args.prompt or [entry["prompt"] for entry in saved.edit_log if isinstance(entry.get("prompt"), str)]
    if not prompts:
        raise CLIError(f"{args.edits}: its edit log names no prompts; pass --prompt TEXT")
    if any(not prompt.strip() for prompt in prompts):
        raise CLIError("--prompt: an empty prompt; give text to answer")
    model, tok = load_model(args.model, device=_device(args.device))
    _load_onto(model, args.edits, saved)
    for prompt in prompts:
        with plumbing.interventions_disabled(model):
            old = metrics.greedy_answer(model, tok, prompt, args.max_new_tokens)
        new = metrics.greedy_answer(model, tok, prompt, args.max_new_tokens)
        # An empty greedy answer (the model emitted only whitespace) would print as nothing at all.
        old, new = (answer or "(only whitespace)" for answer in (old, new))
        print(f"{prompt}\n  without edits: {old}\n  with edits:    {new}")
    return 0


def cmd_explain(args) -> int:
    from .artifacts import explain, render_heatmap
    from .explain import shown_tokens
    from .model_loading import load_model

    if not args.prompt.strip():
        raise CLIError("--prompt: the prompt is empty; give the text whose gates to show")
    saved = _read_artifact(args.edits)
    out = _check_output_file(args.out, "--out")
    model, tok = load_model(args.model, device=_device(args.device))
    _load_onto(model, args.edits, saved)
    explanation = explain(model, tok, args.prompt)
    path = render_heatmap(explanation, out)
    for layer, gates in explanation.gates.items():
        print(f"layer {layer}: peak gate {gates.max():.3f}, mean gate {gates.mean():.3f}")
    n_shown, total = shown_tokens(explanation)
    if n_shown < total:
        read = f"; the gates were read from its last {len(explanation.tokens)}" if explanation.n_cut else ""
        print(f"the prompt has {total} tokens: the heatmap shows the last {n_shown}{read}")
    print(f"heatmap written to {path}")
    return 0


def _run_compare_script(argv) -> None:
    if not COMPARE_SCRIPT.is_file():
        raise CLIError(f"{COMPARE_SCRIPT} is missing; the comparison needs the repository checkout's examples/ "
                       "(run it from a clone of this repository)")
    sys.path.insert(0, str(COMPARE_SCRIPT.parent))  # the script imports its sibling modules
    saved_argv, sys.argv = sys.argv, [str(COMPARE_SCRIPT)] + list(argv)
    try:
        runpy.run_path(str(COMPARE_SCRIPT), run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    finally:
        sys.argv = saved_argv


def cmd_compare(args) -> int:
    from .host import host_available

    if not host_available():
        raise CLIError("compare runs ROME, MEMIT and GRACE through EasyEdit's BaseEditor, and no EasyEdit was "
                       "found: run from an EasyEdit checkout or set EASYEDIT_ROOT to one (see docs/HOST_INTEGRATION.md)")
    _run_compare_script(args.rest)
    return 0


# --- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show its traceback")
    parser = _Parser(prog="easyedit-baft", description=__doc__, parents=[common],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    model_help = "local HF model directory; default: the embedded SmolLM2-135M-Instruct"
    hparams_help = f"BaFT hparams YAML; default: the shipped {DEFAULT_HPARAMS.name}"
    device_help = "cpu (default), cuda, cuda:N or mps"

    demo = sub.add_parser("demo", parents=[common], help="edit the embedded model with real facts and show before/after")
    demo.add_argument("--data", help="ZsRE/CounterFact/KnowEdit JSON; default: the 10 ZsRE facts shipped with the package")
    demo.add_argument("--n", type=_positive_int, default=5, help="number of facts to edit (default 5)")
    demo.add_argument("--hparams", default=str(DEFAULT_HPARAMS), help=hparams_help)
    demo.add_argument("--model", help=model_help)
    demo.add_argument("--out", default="results/demo", help="directory for demo.json, demo.md, demo.png")
    demo.set_defaults(func=cmd_demo)

    edit = sub.add_parser("edit", parents=[common], help="apply edits from a requests file, one after another")
    edit.add_argument("--requests", help="ZsRE, CounterFact, KnowEdit or [{prompt, target_new}] JSON; "
                                         "default: the ZsRE facts shipped with the package")
    edit.add_argument("--n", type=_positive_int, help="only the first n records")
    edit.add_argument("--hparams", default=str(DEFAULT_HPARAMS), help=hparams_help)
    edit.add_argument("--model", help=model_help)
    edit.add_argument("--save", help="directory to save the edits to (safetensors + JSON)")
    edit.add_argument("--overwrite", action="store_true", help="let --save replace edits saved there before")
    edit.add_argument("--force", action="store_true", help="save even when some edits do not hold")
    edit.set_defaults(func=cmd_edit)

    apply = sub.add_parser("apply", parents=[common], help="load saved edits onto a model and generate")
    apply.add_argument("edits", help="directory written by `edit --save`")
    apply.add_argument("--model", help=model_help)
    apply.add_argument("--device", default="cpu", help=device_help)
    apply.add_argument("--prompt", action="append", help="prompt to answer (repeatable); default: the edited prompts")
    apply.add_argument("--max-new-tokens", type=_positive_int, default=12)
    apply.set_defaults(func=cmd_apply)

    explain = sub.add_parser("explain", parents=[common], help="heatmap of which bases a prompt opens")
    explain.add_argument("edits", help="directory written by `edit --save`")
    explain.add_argument("--prompt", required=True)
    explain.add_argument("--model", help=model_help)
    explain.add_argument("--device", default="cpu", help=device_help)
    explain.add_argument("--out", default="explain.png", help="PNG path (default explain.png)")
    explain.set_defaults(func=cmd_explain)

    sub.add_parser("compare", parents=[common], add_help=False,
                   help="BaFT next to ROME, MEMIT and GRACE through EasyEdit's BaseEditor; every argument after "
                        "`compare` goes to examples/compare_methods.py (e.g. --n 20 --methods BaFT ROME)",
                   ).set_defaults(func=cmd_compare)
    return parser


def _split_compare(argv: list) -> tuple:
    """(arguments for this parser, arguments forwarded to the compare script or None)."""
    for index, token in enumerate(argv):
        if not token.startswith("-"):
            return (argv[: index + 1], argv[index + 1:]) if token == "compare" else (argv, None)
    return argv, None


def _one_line(err: BaseException) -> str:
    text = re.sub(r"\s*\n\s*", " ", str(err)).strip()
    if isinstance(err, (CLIError, ValueError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (rerun with --debug for the traceback)"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, forwarded = _split_compare(argv)
    debug = "--debug" in own
    try:
        args = build_parser().parse_args(own)
        args.rest = forwarded or []
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        status = args.func(args)
    except KeyboardInterrupt:
        print("easyedit-baft: interrupted; nothing was saved", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as err:  # noqa: BLE001 - every error leaves as one line, or as a traceback with --debug
        if debug:
            raise
        command = next((token for token in own if not token.startswith("-")), "")
        print(f"easyedit-baft{' ' + command if command else ''}: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
