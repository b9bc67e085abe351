"""The `llmperf` command: release and grade exercises, and two quick analytic look-ups.

    llmperf release exercises/04_boundedness.py --output release/
    llmperf grade submission.ipynb --results results.json
    llmperf grade submissions/ --csv scores.csv
    llmperf estimate llama-2-7b A10 --prompt 350 --output 150
    llmperf layers llama-2-7b --phase decode --batch 8 --seq-len 4096 --accelerator A10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmperf", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="write student notebooks from instructor sources")
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    p.add_argument("--no-py", action="store_true", help="write only the .ipynb")

    p = sub.add_parser("grade", help="grade a submission, or every notebook in a folder")
    p.add_argument("path", type=Path, metavar="SUBMISSION|DIR")
    p.add_argument("--results", type=Path, help="write Gradescope's results.json here")
    p.add_argument("--csv", type=Path, help="write one row per submission here")
    p.add_argument("--exercise", help="grade as this exercise (default: from the notebook)")
    p.add_argument("--source", type=Path, help="folder of instructor sources (default: exercises/)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per question (default 10)")
    p.add_argument("--cell-timeout", type=float, default=10.0, help="seconds per cell (default 10)")
    p.add_argument("--memory-mb", type=int, default=2048, help="memory cap (default 2048)")

    p = sub.add_parser("estimate", help="simple and roofline latency of one request")
    p.add_argument("model")
    p.add_argument("accelerator")
    p.add_argument("--prompt", type=int, required=True, help="prompt tokens")
    p.add_argument("--output", type=int, required=True, help="output tokens")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="fp16")

    p = sub.add_parser("layers", help="per-operator costs of one prefill or decode step")
    p.add_argument("model")
    p.add_argument("--phase", choices=("prefill", "decode"), required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--accelerator", default="A10")
    p.add_argument("--dtype", default="fp16")
    return parser


def _release(args) -> int:
    from .grading.release import release

    for source in args.sources:
        for path in release(source, args.output, write_py=not args.no_py):
            print(f"wrote {path}")
    return 0


def _grade(args) -> int:
    from .grading.grade import grade_file, submissions_in
    from .grading.report import table, write_csv, write_results
    from .grading.sandbox import Limits

    limits = Limits(cell_timeout_s=args.cell_timeout, question_timeout_s=args.timeout,
                    memory_mb=args.memory_mb)
    if not args.path.exists():
        raise ValueError(f"SUBMISSION {args.path}: no such file or folder")
    if args.path.is_dir():
        paths = submissions_in(args.path)
        if args.results:
            paths = _one_submission(paths)
    else:
        paths = [args.path]
    grades = [grade_file(p, args.source, args.exercise, limits) for p in paths]
    if args.results:
        write_results(grades[0] if grades else _nothing_found(args.path), args.results)
    if args.csv:
        write_csv(grades, args.csv)
    for g in grades:
        print(table(g), end="\n\n")
    return 2 if any(g.setup_error for g in grades) else 0


def _one_submission(paths: list[Path]) -> list[Path]:
    """Gradescope hands over a folder: grade its notebook (an .ipynb before a .py)."""
    notebooks = [p for p in paths if p.suffix == ".ipynb"] or paths
    return notebooks[:1]


def _nothing_found(folder: Path):
    from .grading.grade import Grade

    return Grade(str(folder), None, (), (f"no .ipynb or .py notebook found in {folder}",), 0.0)


def _estimate(args) -> int:
    import llmperf as lp

    model, acc = lp.get_model(args.model), lp.get_accelerator(args.accelerator)
    simple = lp.simple_latency(model, acc, args.prompt, args.output, args.dtype)
    roof = lp.roofline_latency(model, acc, args.prompt, args.output, args.batch, args.dtype)
    print(f"{model.name} on {acc.name}, {args.prompt} prompt tokens, {args.output} output tokens, "
          f"{args.dtype}, batch {args.batch}")
    print(f"{'model':<10}{'TTFT':>12}{'decode':>12}{'total':>12}{'TPOT':>12}")
    for label, est in (("simple", simple), ("roofline", roof)):
        print(f"{label:<10}{lp.format_seconds(est.prefill_s):>12}{lp.format_seconds(est.decode_s):>12}"
              f"{lp.format_seconds(est.total_s):>12}{lp.format_seconds(est.tpot_s):>12}")
    if args.batch > 1:
        print("the simple model ignores the batch (one request); the roofline model runs all of it")
    context = args.prompt + args.output - 1
    if context > model.max_seq_len:
        print(f"warning: {context} tokens exceed {model.name}'s context of {model.max_seq_len}")
    fits = lp.max_batch_size(model, acc, context, args.dtype)
    if fits < args.batch:
        print(f"warning: does not fit: {acc.name}'s {lp.format_bytes(acc.mem_capacity, binary=True)} "
              f"hold {fits} such sequence(s) beside the weights, not {args.batch}")
    return 0


def _layers(args) -> int:
    import llmperf as lp

    step = lp.layer_costs(args.model, args.phase, args.batch, args.seq_len, args.dtype,
                          accelerator=args.accelerator)
    print(step.to_text())
    print(f"(each row sums all {lp.get_model(args.model).n_layers} layers where the operator "
          "is in every layer; times are each operator's roofline)")
    return 0


COMMANDS = {"release": _release, "grade": _grade, "estimate": _estimate, "layers": _layers}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `llmperf layers ... | head`
        return 0
    except (ValueError, KeyError, OSError) as err:
        print(f"llmperf {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
