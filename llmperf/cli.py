"""The `llmperf` command: release and grade exercises, and quick analytic look-ups.

    llmperf release exercises/04_boundedness.py --output exercises/_release/
    llmperf grade submission.ipynb --results results.json
    llmperf grade submissions/ --csv scores.csv
    llmperf list models
    llmperf estimate llama-2-7b A10 --prompt-tokens 350 --output-tokens 150
    llmperf layers llama-2-7b --phase decode --batch 8 --seq-len 4096 --accelerator A10
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import sys
from pathlib import Path

from . import __version__

ISOLATIONS = ("auto", "user+namespaces", "user", "namespaces", "none")
DTYPE_HELP = "data type of the weights and the KV cache: fp32, bf16, fp16, fp8, int8 (default fp16)"

# `llmperf list WHAT`: each category under its own name, its singular and, for the
# accelerators, "gpus" and "gpu".
LIST_CATEGORIES = {"models": "models", "model": "models",
                   "accelerators": "accelerators", "accelerator": "accelerators",
                   "gpus": "accelerators", "gpu": "accelerators"}

# The epilog of each command's --help: commands a reader can copy (the list, estimate and
# layers ones run as they are; tests/test_cli.py runs them).
EXAMPLES = {
    None: ["llmperf list models",
           "llmperf estimate llama-2-7b A10 --prompt-tokens 350 --output-tokens 150",
           "llmperf layers llama-2-7b --phase decode --batch 8 --seq-len 4096",
           "llmperf release exercises/04_boundedness.py --output exercises/_release/",
           "llmperf grade submission.ipynb --results results.json",
           "llmperf COMMAND --help            # each command's options and examples"],
    "release": ["llmperf release exercises/04_boundedness.py --output exercises/_release/",
                "llmperf release exercises/0*.py -o exercises/_release/ --no-py"],
    "grade": ["llmperf grade submission.ipynb",
              "llmperf grade submission.ipynb --results results.json",
              "llmperf grade submissions/ --csv scores.csv --exercise 04_boundedness",
              "llmperf grade alice.ipynb alice.py      # the half with the newer code is graded"],
    "list": ["llmperf list", "llmperf list models", "llmperf list gpus"],
    "estimate": ["llmperf estimate llama-2-7b A10 --prompt-tokens 350 --output-tokens 150",
                 "llmperf estimate llama-2-7b A10 --prompt-tokens 350 --output-tokens 150 "
                 "--batch 8",
                 "llmperf estimate llama-2-70b 'H100 SXM' --prompt-tokens 1000 "
                 "--output-tokens 200 --dtype int8",
                 "llmperf estimate mistral-7b L4 --prompt-tokens 500 --output-tokens 100 "
                 "--no-ecc"],
    "layers": ["llmperf layers llama-2-7b --phase decode --batch 8 --seq-len 4096",
               "llmperf layers llama-2-7b --phase prefill --seq-len 512 --accelerator 'H100 SXM'",
               "llmperf layers mixtral-8x7b --phase decode --seq-len 2048 --dtype int8"],
}


def _examples(command: str | None) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, except that the examples keep their lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmperf", description=__doc__.split("\n")[0],
                                     allow_abbrev=False, formatter_class=_HelpFormatter,
                                     epilog=_examples(None))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _release_parser(sub)
    _grade_parser(sub)
    _list_parser(sub)
    _estimate_parser(sub)
    _layers_parser(sub)
    for name, command in sub.choices.items():
        command.formatter_class = _HelpFormatter
        command.epilog = _examples(name)
    return parser


def _release_parser(sub) -> None:
    p = sub.add_parser("release", allow_abbrev=False,
                       help="write student notebooks from instructor sources",
                       description="Write the notebook students get from each instructor source: "
                       "solutions replaced by stubs, hidden checks removed.")
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="an instructor source, exercises/NN_topic.py (solutions included)")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                   help="folder to write NAME.ipynb and NAME.py into (created if missing); "
                   "exercises/_release/ is ignored by git")
    p.add_argument("--no-py", action="store_true", help="write only the .ipynb, not its .py twin")


def _grade_parser(sub) -> None:
    p = sub.add_parser("grade", allow_abbrev=False,
                       help="grade a submission, or every notebook in a folder",
                       description="Run a submission in a sandbox, compare its answers with the "
                       "instructor's, and print a table (and, on request, results.json or a CSV).")
    p.add_argument("paths", nargs="+", type=Path, metavar="SUBMISSION|DIR",
                   help="a student's .ipynb or .py, or a folder of them (several may be given); "
                   "where NAME.ipynb and NAME.py are both there, the one with the newer code "
                   "is graded, and the report says which and why")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="write Gradescope's results.json here, for one submission (with a "
                   "folder: grade its notebook)")
    p.add_argument("--csv", type=Path, metavar="FILE",
                   help="write one row per submission here, and beside it NAME.summary.md (per "
                   "question: mean score, the hidden checks failed most) and "
                   "NAME.distribution.png (the scores; needs matplotlib)")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="submissions graded at once, each in its own process and sandbox "
                   "(default: one per core)")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="a progress bar on stderr: auto (only on a terminal), on, off")
    p.add_argument("--exercise", metavar="NAME",
                   help="grade as this exercise, e.g. 04_boundedness (default: from the notebook)")
    p.add_argument("--source", type=Path, metavar="DIR",
                   help="folder of instructor sources (default: exercises/)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time each question gets for all its checks (default 10)")
    p.add_argument("--cell-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time each cell of the notebook gets (default 10)")
    p.add_argument("--memory-mb", type=int, default=2048, metavar="MB",
                   help="address space of the submission's process, in MiB (default 2048)")
    p.add_argument("--isolation", choices=ISOLATIONS, default="auto",
                   help="how to contain the submission: auto (the strongest that works here), "
                   "user+namespaces or user (as root: another user, with or without private "
                   "namespaces), namespaces (an ordinary user's private namespaces), none "
                   "(unisolated: trusted work only)")


def _list_category(text: str) -> str:
    """WHAT of `llmperf list WHAT`: a category, in either number, any case."""
    key = text.strip().lower()
    if key in LIST_CATEGORIES:
        return LIST_CATEGORIES[key]
    close = difflib.get_close_matches(key, list(LIST_CATEGORIES), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"{text!r} is not something to list{hint} "
                                     f"(choose from {', '.join(LIST_CATEGORIES)})")


def _list_parser(sub) -> None:
    p = sub.add_parser("list", allow_abbrev=False,
                       help="the catalog's models and accelerators, with key figures",
                       description="List the models and accelerators that the other commands "
                       "and the library know by name.")
    p.add_argument("what", nargs="?", type=_list_category, metavar="WHAT",
                   help="models (or model) or accelerators (or accelerator, gpus, gpu); "
                   "default: both")


def _estimate_parser(sub) -> None:
    p = sub.add_parser("estimate", allow_abbrev=False,
                       help="simple and roofline latency of one request",
                       description="Time to first token, decode time and time per output token "
                       "of one request, from the simple and the roofline model.")
    p.add_argument("model", help="a catalog model, e.g. llama-2-7b (see `llmperf list models`)")
    p.add_argument("accelerator",
                   help="a catalog accelerator, e.g. A10 (see `llmperf list accelerators`)")
    p.add_argument("--prompt-tokens", type=int, required=True, metavar="N",
                   help="tokens in the prompt (the prefill)")
    p.add_argument("--output-tokens", type=int, required=True, metavar="N",
                   help="tokens generated (the first comes from the prefill)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="requests run together, each with these prompt and output tokens "
                   "(default 1; the simple model ignores it)")
    p.add_argument("--dtype", default="fp16", help=DTYPE_HELP)
    p.add_argument("--no-ecc", action="store_true",
                   help="count all of a GDDR6 part's memory (ECC off); by default its inline "
                   "ECC takes 1/16 (T4, L4, A10, A10G, L40S)")


def _layers_parser(sub) -> None:
    p = sub.add_parser("layers", allow_abbrev=False,
                       help="per-operator costs of one prefill or decode step",
                       description="FLOPs, bytes, intensity, bound and roofline time of each "
                       "operator of one forward step.")
    p.add_argument("model", help="a catalog model, e.g. llama-2-7b (see `llmperf list models`)")
    p.add_argument("--phase", choices=("prefill", "decode"), required=True,
                   help="prefill: whole prompts; decode: one new token per sequence")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="sequences (default 1)")
    p.add_argument("--seq-len", type=int, required=True, metavar="N",
                   help="prefill: prompt tokens; decode: tokens already in the KV cache")
    p.add_argument("--accelerator", default="A10",
                   help="a catalog accelerator for the times and bounds (default A10)")
    p.add_argument("--dtype", default="fp16", help=DTYPE_HELP)


class UsageError(Exception):
    """Bad arguments (or a file named by one that cannot be used): one line, exit status 2."""


def _release(args) -> int:
    from .grading.notebooks import MarkerError, NotebookError
    from .grading.questions import ExerciseError
    from .grading.release import ReleaseError, release

    for source in args.sources:
        try:
            written = release(source, args.output, write_py=not args.no_py)
        except (NotebookError, ExerciseError, MarkerError, ReleaseError) as err:
            raise UsageError(err) from err
        for path in written:
            print(f"wrote {path}")
    return 0


def _grade(args) -> int:
    from .grading.box import Limits
    from .grading.classroom import Options, available_cores, grade_many, write_summary
    from .grading.grade import Grade
    from .grading.reports import table, write_csv, write_results

    limits = Limits(cell_timeout_s=args.cell_timeout, question_timeout_s=args.timeout,
                    memory_mb=args.memory_mb)
    jobs = available_cores() if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: submissions graded at once must be at least 1")
    if args.csv and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"--csv {args.csv}: the score plot beside the CSV needs matplotlib, "
                         "which is not installed here (pip install matplotlib)")
    subs = _submissions(args)
    isolation = _announce_isolation(args)
    progress = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    grades = grade_many(subs, Options(isolation, args.source, args.exercise, limits), jobs,
                        progress)
    if args.results:
        nothing = f"no .ipynb or .py notebook found in {' '.join(map(str, args.paths))}"
        write_results(grades[0] if grades else Grade(str(args.paths[0]), None, (), (nothing,),
                                                     0.0, isolation=isolation), args.results)
    if args.csv:
        write_csv(grades, args.csv)
        for path in write_summary(grades, args.csv):
            print(f"wrote {path}", file=sys.stderr)
    for g in grades:
        print(table(g), end="\n\n")
    return 2 if any(g.setup_error for g in grades) else 0


def _submissions(args) -> list:
    """The submissions the paths name: each name once, the newer half of a pair (`halves`)."""
    from .grading.halves import notebook_files, pick_halves

    files = []
    for path in args.paths:
        if not path.exists():
            raise UsageError(f"SUBMISSION {path}: no such file or folder")
        files += notebook_files(path) if path.is_dir() else [path]
    try:
        subs = pick_halves(files)
    except ValueError as err:
        raise UsageError(err) from err
    if args.results and len(subs) > 1:
        if len(args.paths) > 1 or not args.paths[0].is_dir():
            raise UsageError(f"--results {args.results}: results.json holds one submission, and "
                             f"these paths hold {len(subs)}: {', '.join(s.name for s in subs)}")
        # Gradescope hands over a folder: grade its notebook (an .ipynb before a .py)
        subs = ([s for s in subs if s.path.suffix == ".ipynb"] or subs)[:1]
    return subs


def _announce_isolation(args):
    """Choose the isolation, print it on one line, and warn about what it leaves open."""
    from .grading.box import exposure_warnings, warning
    from .grading.grade import default_source_dir
    from .grading.isolation import IsolationError, choose_isolation

    try:
        choice = choose_isolation(args.isolation)
    except IsolationError as err:
        raise UsageError(f"--isolation {args.isolation}: {err}") from err
    isolation = choice.isolation
    print(f"isolation: {isolation.describe()}")
    for mode, why in choice.refused.items():
        print(f"note: isolation {mode} is not available here: {why}", file=sys.stderr)
    exposed = {"instructor sources": args.source or default_source_dir(),
               "results folder": args.results.parent if args.results else None}
    exposed.update({f"submissions folder {p}": p for p in args.paths if p.is_dir()})
    notes = [warning(isolation, args.isolation)] + exposure_warnings(isolation, exposed)
    for note in filter(None, notes):
        print(f"warning: {note}", file=sys.stderr)
    return isolation


def _list(args) -> int:
    import llmperf as lp

    if args.what in (None, "models"):
        print(f"{'model':<18}{'params':>10}{'layers':>8}{'d_model':>9}{'heads':>7}"
              f"{'kv heads':>10}{'context':>9}")
        for name in lp.list_models():
            m = lp.get_model(name)
            print(f"{m.name:<18}{_count(m.param_count()):>10}{m.n_layers:>8}{m.d_model:>9}"
                  f"{m.n_heads:>7}{m.n_kv_heads or m.n_heads:>10}{m.max_seq_len:>9}")
    if args.what is None:
        print()
    if args.what in (None, "accelerators"):
        print(f"{'accelerator':<16}{'fp16 dense':>16}{'bandwidth':>14}{'memory':>12}")
        for name in lp.list_accelerators():
            a = lp.get_accelerator(name)
            fp16 = lp.format_flop_rate(a.peak_flops["fp16"]) if "fp16" in a.peak_flops else "-"
            print(f"{a.name:<16}{fp16:>16}{lp.format_bandwidth(a.mem_bandwidth):>14}"
                  f"{lp.format_bytes(a.mem_capacity, binary=True):>12}")
    return 0


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _both_units(n_bytes: float) -> str:
    import llmperf as lp

    return f"{lp.format_bytes(n_bytes)} = {lp.format_bytes(n_bytes, binary=True)}"


def _flag(flag: str, look_up, *args):
    """look_up(*args), with a bad value reported under the flag the user typed."""
    try:
        return look_up(*args)
    except (ValueError, KeyError) as err:
        raise UsageError(f"{flag}: {err.args[0] if err.args else err}") from err


def _count_flag(flag: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{flag}: must be a positive whole number, got {value}")
    return value


def _dtype(acc, dtype: str) -> str:
    """--dtype as the library names it, checked against the accelerator's peaks."""
    import llmperf as lp

    dtype = _flag("--dtype", lp.normalize_dtype, dtype)
    _flag("--dtype", acc.peak, dtype)
    return dtype


def _largest_batch_that_fits(model, acc, report, dtype: str, ecc: bool) -> int:
    """The most sequences like the report's, at most its batch, whose weights, KV cache and
    activations fit in `dtype` (0 when not even one does)."""
    import llmperf as lp

    batch = min(report.batch, lp.max_batch_size(model, acc, report.seq_len, dtype, ecc=ecc))
    while batch > 0 and not lp.memory_report(model, acc, batch, report.seq_len, dtype, ecc=ecc,
                                             prefill_tokens=report.prefill_tokens).fits:
        batch -= 1
    return batch


def _smaller_dtype(model, acc, report, ecc: bool) -> str | None:
    """A smaller dtype to suggest: the largest one `acc` runs whose weights fit, and with it
    the whole request or, failing that, the most sequences that fit (None when none does)."""
    import llmperf as lp

    size = lp.bytes_per_element(report.dtype)
    smaller = sorted((d for d in acc.dtypes if lp.bytes_per_element(d) < size),
                     key=lp.bytes_per_element, reverse=True)
    for dtype in smaller:
        batch = _largest_batch_that_fits(model, acc, report, dtype, ecc)
        if batch == report.batch:
            there = lp.memory_report(model, acc, batch, report.seq_len, dtype, ecc=ecc,
                                     prefill_tokens=report.prefill_tokens)
            return (f"--dtype {dtype} (needs {lp.format_bytes(there.needed_bytes)}, weights "
                    f"{lp.format_bytes(there.weight_bytes)})")
        if batch:
            return f"--dtype {dtype} with --batch {batch}"
    return None


def _does_not_fit(report, model, acc, ecc: bool) -> str:
    """Why a request does not fit, and what would (said instead of timings, exit status 1)."""
    import llmperf as lp

    ecc_note = f" ({'ECC on' if ecc else 'ECC off'})" if acc.inline_ecc else ""
    needs = (f"needs {_both_units(report.needed_bytes)} of {_both_units(report.usable_bytes)} "
             f"usable{ecc_note}")
    fixes = []
    if not report.weights_fit:
        why = (f"{model.name} does not fit on one {acc.name}: {needs}; its {report.dtype} "
               f"weights alone take {_both_units(report.weight_bytes)}")
    else:
        why = (f"{model.name} on {acc.name} does not fit: {needs}: weights "
               f"{lp.format_bytes(report.weight_bytes)}, KV cache "
               f"{lp.format_bytes(report.kv_bytes)} for {report.batch} sequence(s) of "
               f"{report.seq_len} tokens, activations "
               f"{lp.format_bytes(report.activation_bytes)} (estimate)")
        batch = _largest_batch_that_fits(model, acc, report, report.dtype, ecc)
        if batch:
            fixes.append(f"--batch {batch} (the most such sequences that fit, activations "
                         "included)")
        else:
            fixes.append("fewer tokens (not even one such sequence fits beside the weights)")
    smaller = _smaller_dtype(model, acc, report, ecc)
    if smaller:
        fixes.append(smaller)
    if ecc and acc.usable_capacity(False) > acc.usable_capacity(True) and lp.memory_report(
            model, acc, report.batch, report.seq_len, report.dtype, ecc=False,
            prefill_tokens=report.prefill_tokens).fits:
        fixes.append("--no-ecc (all of its memory, ECC off)")
    fixes += ["a smaller model", "more memory"]
    return f"{why}. No timings: try {', '.join(fixes[:-1])} or {fixes[-1]}"


def _estimate(args) -> int:
    import llmperf as lp

    model, acc = lp.get_model(args.model), lp.get_accelerator(args.accelerator)
    for flag in ("--prompt-tokens", "--output-tokens", "--batch"):
        _count_flag(flag, getattr(args, flag[2:].replace("-", "_")))
    dtype = _dtype(acc, args.dtype)
    ecc = not args.no_ecc
    # Its memory report, as the library checks it: the cache at the last step, the
    # prefill's activations.
    roof = lp.roofline_latency(model, acc, args.prompt_tokens, args.output_tokens, args.batch,
                               dtype, ecc=ecc)
    report = roof.memory
    if not roof.fits:
        print(f"llmperf estimate: {_does_not_fit(report, model, acc, ecc)}.", file=sys.stderr)
        return 1
    simple = lp.simple_latency(model, acc, args.prompt_tokens, args.output_tokens, dtype,
                               ecc=ecc)
    print(f"{model.name} on {acc.name}, {args.prompt_tokens} prompt tokens, "
          f"{args.output_tokens} output tokens, {dtype}, batch {args.batch}")
    print(f"{'model':<10}{'TTFT':>12}{'decode':>12}{'total':>12}{'TPOT':>12}")
    for label, est in (("simple", simple), ("roofline", roof)):
        times = (est.prefill_s, est.decode_s, est.total_s, est.tpot_s)
        print(f"{label:<10}" + "".join(f"{lp.format_seconds(t):>12}" for t in times))
    print(f"(both charge {args.output_tokens - 1} decode steps: the prefill yields the first "
          "token)")
    if args.batch > 1:
        print("the simple model ignores the batch (one request); the roofline model runs all of it")
    print(f"memory, batch {args.batch}: {report.summary()}")
    context = args.prompt_tokens + args.output_tokens - 1
    if context > model.max_seq_len:
        print(f"warning: {context} tokens exceed {model.name}'s context of {model.max_seq_len}")
    return 0


def _layers(args) -> int:
    import llmperf as lp

    model = lp.get_model(args.model)
    acc = _flag("--accelerator", lp.get_accelerator, args.accelerator)
    _count_flag("--batch", args.batch)
    _count_flag("--seq-len", args.seq_len)
    dtype = _dtype(acc, args.dtype)
    step = lp.step_costs(model, args.phase, args.batch, args.seq_len, dtype)
    print(step.on(acc).to_text())
    print(f"(each row sums all {model.n_layers} layers where the operator "
          "is in every layer; times are each operator's roofline)")
    return 0


COMMANDS = {"release": _release, "grade": _grade, "list": _list, "estimate": _estimate,
            "layers": _layers}
# What a command reports in one line with exit status 2, as a bad argument. The look-ups
# raise ValueError or KeyError for a bad name or size. Release and grade raise UsageError
# for theirs; any other exception of theirs is a fault, and keeps its traceback.
LOOKUP_ERRORS = (UsageError, ValueError, KeyError, OSError)
BAD_ARGUMENTS = {"release": (UsageError,), "grade": (UsageError,)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `llmperf layers ... | head`
        return 0
    except BAD_ARGUMENTS.get(args.command, LOOKUP_ERRORS) as err:
        print(f"llmperf {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
