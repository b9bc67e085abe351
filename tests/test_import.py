"""`import llmperf` stays light: no torch, no matplotlib."""
import subprocess
import sys


def test_import_does_not_pull_in_torch_or_matplotlib():
    code = ("import sys, llmperf; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
