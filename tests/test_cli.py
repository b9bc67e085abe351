"""The `llmperf` command's analytic look-ups and its handling of awkward input."""

import pytest

import llmperf as lp
from llmperf.cli import main
from llmperf.grading.grade import submissions_in


def test_estimate_prints_both_models_and_warns_when_the_model_does_not_fit(capsys):
    assert main(["estimate", "llama-2-70b", "A10", "--prompt", "350", "--output", "150"]) == 0
    out = capsys.readouterr().out
    assert "simple" in out and "roofline" in out
    assert "does not fit" in out
    assert main(["estimate", "llama-2-7b", "A10", "--prompt", "350", "--output", "150"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" not in out
    assert lp.format_seconds(lp.simple_latency("llama-2-7b", "A10", 350, 150).total_s) in out


def test_simple_model_tpot_divides_by_the_steps_it_charges():
    est = lp.simple_latency("llama-2-7b", "A10", 350, 150)
    assert est.decode_steps == 150
    assert est.tpot_s == pytest.approx(est.decode_s / 150)
    assert lp.roofline_latency("llama-2-7b", "A10", 350, 150).decode_steps == 149


def test_layers_says_rows_sum_over_layers(capsys):
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "2048"]) == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "all 32 layers" in out


def test_bad_names_and_sizes_exit_2_with_a_message(capsys):
    assert main(["estimate", "llama-9", "A10", "--prompt", "1", "--output", "1"]) == 2
    assert "model 'llama-9'" in capsys.readouterr().err
    assert main(["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "8", "--batch", "-1"]) == 2
    assert "batch" in capsys.readouterr().err


def test_grading_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nothing.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_folder_grades_the_notebook_not_also_its_py_twin(tmp_path):
    for name in ("alice.ipynb", "alice.py", "bob.py"):
        (tmp_path / name).write_text("{}" if name.endswith("ipynb") else "# %%\n")
    assert [p.name for p in submissions_in(tmp_path)] == ["alice.ipynb", "bob.py"]
