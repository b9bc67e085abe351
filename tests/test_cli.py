"""The `llmperf` command: its help, its analytic look-ups and its handling of awkward input."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

import llmperf as lp
from llmperf.cli import _parser, main
from llmperf.grading.grade import submissions_in

FIT = ["--prompt-tokens", "350", "--output-tokens", "150"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_argument_of_every_command_has_help():
    commands = _subparsers()
    assert set(commands) == {"release", "grade", "list", "estimate", "layers"}
    for name, parser in commands.items():
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_release_help_describes_source_and_output(capsys):
    with pytest.raises(SystemExit):
        main(["release", "--help"])
    out = capsys.readouterr().out
    assert "SOURCE" in out and "instructor source" in out
    assert "--output DIR" in out and "folder" in out


def test_token_counts_have_unambiguous_names(capsys):
    for old in (["--prompt", "350", "--output-tokens", "150"],
                ["--prompt-tokens", "350", "--output", "150"]):
        with pytest.raises(SystemExit):
            main(["estimate", "llama-2-7b", "A10", *old])
        assert "required: --" in capsys.readouterr().err


def test_estimate_prints_both_models_when_everything_fits(capsys):
    assert main(["estimate", "llama-2-7b", "A10", *FIT]) == 0
    out = capsys.readouterr().out
    assert "simple" in out and "roofline" in out and "does not fit" not in out
    assert lp.format_seconds(lp.simple_latency("llama-2-7b", "A10", 350, 150).total_s) in out
    # 149 decode steps of 2P / BW: 149 * 13,476,831,232 B / 600e9 B/s = 3.35 s.
    assert "3.35 s" in out and "both charge 149 decode steps" in out
    assert "memory, batch 1: fits: needs" in out and "of 24.16 GB usable (ECC on)" in out


def test_estimate_refuses_timings_when_the_weights_do_not_fit(capsys):
    assert main(["estimate", "llama-2-70b", "A10", *FIT]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("llmperf estimate: llama-2-70b does not fit on one A10")
    # 2 x 68,976,648,192 parameters; 24 GiB x 15/16 usable with ECC on.
    assert "137.95 GB = 128.48 GiB" in err and "of 24.16 GB = 22.50 GiB usable (ECC on)" in err
    assert "TTFT" not in err and "roofline" not in err
    assert main(["estimate", "llama-2-70b", "A10", *FIT, "--no-ecc"]) == 1
    assert "of 25.77 GB = 24.00 GiB usable (ECC off)" in capsys.readouterr().err


def test_a_smaller_dtype_is_suggested_only_where_its_weights_fit(capsys):
    # On an A10 (22.50 GiB usable) even int8 weights take 68.98 GB, and it has no int4 peak.
    assert main(["estimate", "llama-2-70b", "A10", *FIT]) == 1
    err = capsys.readouterr().err
    assert "--dtype" not in err and "try a smaller model or more memory." in err
    # On an A100 80GB (85.90 GB) the int8 weights, 68.98 GB, fit with the request's cache.
    assert main(["estimate", "llama-2-70b", "A100 SXM 80GB", *FIT]) == 1
    err = capsys.readouterr().err
    assert "try --dtype int8 (needs 69.09 GB, weights 68.98 GB), a smaller model" in err
    # On an A100 40GB (42.95 GB) they do not: no dtype to suggest (no int4 peak there).
    assert main(["estimate", "llama-2-70b", "A100 SXM 40GB", *FIT]) == 1
    err = capsys.readouterr().err
    assert "--dtype" not in err
    # An HBM part has no inline ECC to mention.
    assert "of 42.95 GB = 40.00 GiB usable;" in err


# Llama 2 7B on an A10, fp16, ECC on: 10,682,359,808 bytes are left beside the weights
# (24,159,191,040 - 13,476,831,232). Each sequence of a 4000-token prompt and 96 output
# tokens holds 4095 tokens of KV cache at 524,288 B (2 x 32 layers x 4096 x 2 B) =
# 2,146,959,360 B, and its prefill's activations (standard attention: the residual stream
# 2 x 4000 x 4096, then the largest stage, the scores 2 x 32 x 4000^2 beside the queries
# 4000 x 4096, all at 2 B) 2,146,304,000 B: 4,293,263,360 B a sequence, so 2 fit (2.49).
LONG = ["--prompt-tokens", "4000", "--output-tokens", "96"]


def test_a_kv_cache_that_does_not_fit_is_an_error(capsys):
    assert main(["estimate", "llama-2-7b", "A10", *LONG, "--batch", "16"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "TTFT" not in err
    assert err.startswith("llmperf estimate: llama-2-7b on A10 does not fit: needs")
    # 16 x 2,146,959,360 B of cache; 16 x 2,146,304,000 B of activations.
    assert "KV cache 34.35 GB for 16 sequence(s) of 4095 tokens" in err
    assert "activations 34.34 GB (estimate)" in err
    assert "try --batch 2 (the most such sequences that fit" in err
    # int8: 6,738,415,616 B of weights leave 17,420,775,424 B; half the bytes a sequence
    # (2,146,631,680 B), so 8 fit (8.12) but not 16.
    assert "--dtype int8 with --batch 8" in err
    assert main(["estimate", "llama-2-7b", "A10", *LONG, "--batch", "2"]) == 0
    assert "memory, batch 2: fits" in capsys.readouterr().out
    assert main(["estimate", "llama-2-7b", "A10", *LONG, "--batch", "3"]) == 1


def test_what_would_fit_is_counted_with_ecc_and_a_smaller_dtype(capsys):
    # 2000-token prompts, 96 output tokens: a sequence is 2095 x 524,288 = 1,098,383,360 B of
    # cache and 561,152,000 B of activations (2 x 2000 x 4096 + 2000 x 4096 + 2 x 32 x 2000^2,
    # at 2 B): 1,659,535,360 B. ECC on, 6 fit (6.44); ECC off, 12,292,972,544 B, 7 (7.41).
    argv = ["estimate", "llama-2-7b", "A10", "--prompt-tokens", "2000", "--output-tokens", "96"]
    assert main([*argv, "--batch", "7"]) == 1
    err = capsys.readouterr().err
    assert "--batch 6 (" in err and "--no-ecc (all of its memory, ECC off)" in err
    # int8: 6,738,415,616 + 7 x (549,191,680 + 280,576,000) = 12,546,789,376 B.
    assert "--dtype int8 (needs 12.55 GB, weights 6.74 GB)" in err
    assert main([*argv, "--batch", "7", "--no-ecc"]) == 0
    assert main([*argv, "--batch", "6"]) == 0
    # 350,000 tokens: not one sequence fits, at any dtype.
    assert main(["estimate", "llama-2-7b", "A10", "--prompt-tokens", "350000",
                 "--output-tokens", "1"]) == 1
    err = capsys.readouterr().err
    assert "fewer tokens (not even one such sequence fits" in err and "--dtype" not in err


def test_estimate_rejects_non_positive_counts(capsys):
    assert main(["estimate", "llama-2-7b", "A10", "--prompt-tokens", "0",
                 "--output-tokens", "5"]) == 2
    assert "llmperf estimate: --prompt-tokens: must be a positive" in capsys.readouterr().err
    assert main(["estimate", "llama-2-7b", "A10", *FIT, "--batch", "-3"]) == 2
    assert "--batch: must be a positive whole number, got -3" in capsys.readouterr().err


def test_errors_name_the_flag_the_user_typed(capsys):
    assert main(["estimate", "llama-2-7b", "A10", *FIT, "--dtype", "fp7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmperf estimate: --dtype: dtype must be one of") and "'fp7'" in err
    # fp8 is a dtype, but an A10 has no fp8 peak
    assert main(["estimate", "llama-2-7b", "A10", *FIT, "--dtype", "fp8"]) == 2
    assert "--dtype: dtype 'fp8' has no peak on A10" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8",
                 "--accelerator", "B200"]) == 2
    assert "llmperf layers: --accelerator: accelerator 'B200'" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "0"]) == 2
    assert "llmperf layers: --seq-len: must be a positive" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8",
                 "--dtype", "half"]) == 0  # an alias the library knows


def test_misspelled_names_suggest_the_closest_first(capsys):
    # 'llama27' against the catalog's keys: 'llama27b' 14/15, 'llama270b' 14/16, then
    # 'llama370b' and 'llama213b' 12/16 (difflib's ratio): alphabetical order would put
    # llama-2-70b first.
    with pytest.raises(ValueError, match=re.escape("Closest: ['llama-2-7b', 'llama-2-70b', ")):
        lp.get_model("llama-2-7")
    assert main(["estimate", "llama-2-7", "A10", *FIT]) == 2
    assert "Closest: ['llama-2-7b', 'llama-2-70b', " in capsys.readouterr().err
    # 'a1o': 'a10' 4/6, then 'a10g' and the alias 'a100' (both A100s) 4/7.
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8",
                 "--accelerator", "a1o"]) == 2
    err = capsys.readouterr().err
    assert "--accelerator: accelerator 'a1o' is not in the catalog. Closest: ['A10', 'A10G', " \
           "'A100 SXM 40GB', 'A100 SXM 80GB']." in err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M).group(1)
    assert capsys.readouterr().out == f"llmperf {version}\n" == f"llmperf {lp.__version__}\n"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def _examples(help_text: str) -> list[str]:
    tail = help_text.split("\nexamples:\n", 1)[1]
    return [line.split("  #")[0].strip() for line in tail.splitlines() if line.strip()]


def test_every_help_ends_with_examples(capsys):
    for argv in ([], *([name] for name in _subparsers())):
        examples = _examples(_help(argv, capsys))
        assert examples, argv
        assert all(e.startswith(" ".join(["llmperf", *argv])) for e in examples), (argv, examples)


def test_the_examples_of_the_look_ups_run_and_the_others_parse(capsys):
    for name in _subparsers():
        for example in _examples(_help([name], capsys)):
            argv = shlex.split(example)[1:]
            if name in ("list", "estimate", "layers"):
                assert main(argv) == 0, example
            else:
                _parser().parse_args(argv)  # release and grade: parsed, not run
            capsys.readouterr()


def test_list_shows_models_and_accelerators_with_key_figures(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("llama-2-7b "))
    assert "6.74B" in row and " 32 " in row and "A10" not in out
    assert main(["list", "accelerators"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("A10 "))
    assert "125.00 TFLOP/s" in row and "600.00 GB/s" in row and "24.00 GiB" in row
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in lp.list_models() + lp.list_accelerators())


def test_list_takes_either_number_and_gpus_for_accelerators(capsys):
    outputs = {}
    for what in ("models", "model", "Models", "accelerators", "accelerator", "gpus", "gpu",
                 "GPUs"):
        assert main(["list", what]) == 0
        outputs[what] = capsys.readouterr().out
    assert outputs["models"] == outputs["model"] == outputs["Models"]
    assert outputs["accelerators"] == outputs["accelerator"] == outputs["gpus"] == \
        outputs["gpu"] == outputs["GPUs"]
    assert outputs["gpus"].startswith("accelerator ") and "H100 SXM" in outputs["gpus"]
    with pytest.raises(SystemExit) as done:
        main(["list", "modles"])
    assert done.value.code == 2
    assert "'modles' is not something to list; did you mean 'models'?" in capsys.readouterr().err


def test_simple_model_tpot_divides_by_the_steps_it_charges():
    est = lp.simple_latency("llama-2-7b", "A10", 350, 150)
    assert est.decode_steps == 149
    assert est.tpot_s == pytest.approx(est.decode_s / 149)
    assert lp.roofline_latency("llama-2-7b", "A10", 350, 150).decode_steps == 149


def test_layers_places_the_table_on_the_accelerator(capsys):
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "2048",
                 "--accelerator", "H100 SXM"]) == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "all 32 layers" in out and "on H100 SXM" in out
    placed = lp.step_costs("llama-2-7b", "decode", 1, 2048).on("H100 SXM")
    assert lp.format_seconds(placed.time_s) in out


def test_bad_names_and_sizes_exit_2_with_a_message(capsys):
    assert main(["estimate", "llama-9", "A10", "--prompt-tokens", "1", "--output-tokens", "1"]) == 2
    assert "model 'llama-9'" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8",
                 "--batch", "-1"]) == 2
    assert "batch" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8",
                 "--accelerator", "a100"]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_grading_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nothing.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_folder_grades_the_notebook_not_also_its_py_twin(tmp_path):
    for name in ("alice.ipynb", "alice.py", "bob.py"):
        (tmp_path / name).write_text("{}" if name.endswith("ipynb") else "# %%\n")
    assert [p.name for p in submissions_in(tmp_path)] == ["alice.ipynb", "bob.py"]


# ---- grade and release: bad arguments are usage errors, the grader's own faults are not ----------
TOY = Path(__file__).resolve().parent / "grading_cases"


def test_a_fault_inside_grade_keeps_its_traceback(tmp_path, monkeypatch):
    from llmperf.grading import grade

    def broken(*args, **kwargs):
        raise KeyError("a key the grader forgot")

    monkeypatch.setattr(grade, "grade_file", broken)
    submission = tmp_path / "sub.py"
    submission.write_text("# %%\nanswer = 42\n")
    with pytest.raises(KeyError, match="a key the grader forgot"):
        main(["grade", str(submission), "--exercise", "toy", "--source", str(TOY),
              "--isolation", "none"])


def test_a_fault_inside_release_keeps_its_traceback(tmp_path, monkeypatch):
    from llmperf.grading import release

    def broken(ex):
        raise ValueError("a bug in release")

    monkeypatch.setattr(release, "student_notebook", broken)
    with pytest.raises(ValueError, match="a bug in release"):
        main(["release", str(TOY / "toy.py"), "--output", str(tmp_path)])


def test_a_source_that_cannot_be_released_is_a_usage_error(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("# %%\nraise RuntimeError('the instructor broke this cell')\n")
    assert main(["release", str(broken), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmperf release: ") and "the instructor broke this cell" in err
    assert main(["release", str(tmp_path / "missing.py"), "--output", str(tmp_path)]) == 2
    assert "cannot be read as a notebook" in capsys.readouterr().err


def test_the_readmes_commands_run(capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands = [line.split("  #")[0].strip() for line in readme.splitlines()
                if line.startswith("llmperf ")]
    assert len(commands) >= 4
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
        capsys.readouterr()
