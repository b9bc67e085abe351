"""The `llmperf` command: its help, its analytic look-ups and its handling of awkward input."""

import argparse
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
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "does not fit" in first and "weights" in first
    # 2 x 68,976,648,192 parameters; 24 GiB x 15/16 usable with ECC on.
    assert "137.95 GB = 128.48 GiB" in first and "of 24.16 GB = 22.50 GiB usable (ECC on)" in first
    assert "TTFT" not in out and "roofline" not in out
    assert main(["estimate", "llama-2-70b", "A10", *FIT, "--no-ecc"]) == 1
    assert "of 25.77 GB = 24.00 GiB usable (ECC off)" in capsys.readouterr().out


def test_estimate_says_first_when_the_kv_cache_does_not_fit(capsys):
    argv = ["estimate", "llama-2-7b", "A10", "--prompt-tokens", "4000", "--output-tokens", "96",
            "--batch", "16"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("warning: llama-2-7b on A10 does not fit: needs")
    # (24,159,191,040 - 13,476,831,232) / (4095 * 524,288) = 4.98: four caches fit, ECC on.
    assert "the KV caches of 4 such sequence(s) fit" in lines[0]
    assert lp.max_batch_size("llama-2-7b", "A10", 4095) == 4
    assert any("TTFT" in line for line in lines[1:])


def test_estimate_rejects_non_positive_counts(capsys):
    assert main(["estimate", "llama-2-7b", "A10", "--prompt-tokens", "0",
                 "--output-tokens", "5"]) == 2
    assert "--prompt-tokens must be a positive" in capsys.readouterr().err


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
