"""tools/torch_index.py: where `make setup` installs torch from, decided with fakes, then for real.

The CPU index only on Linux without an NVIDIA GPU, and only when it answers in time; the
question is asked only when the answer would be used. A local server stands in for the index.
"""
import http.server
import importlib.util
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("torch_index", ROOT / "tools" / "torch_index.py")
ti = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ti)

CPU = "--extra-index-url=https://download.pytorch.org/whl/cpu"


def _never(*args):
    raise AssertionError("not to be asked")


@pytest.mark.parametrize("platform, gpu, answers, expected", [
    ("linux", False, True, CPU),      # the case it is for
    ("linux", False, False, ""),      # offline or behind a mirror: the configured index
    ("linux", True, True, ""),        # a GPU: PyPI's CUDA build
    ("darwin", False, True, ""),      # macOS and Windows wheels on PyPI have no CUDA
    ("win32", False, True, ""),
])
def test_the_cpu_index_only_on_linux_without_a_gpu_when_it_answers(platform, gpu, answers,
                                                                     expected):
    assert ti.torch_index_options(platform, gpu=lambda: gpu,
                                  answers=lambda url: answers) == expected


def test_the_index_is_asked_only_when_its_answer_matters():
    assert ti.torch_index_options("darwin", gpu=_never, answers=_never) == ""
    assert ti.torch_index_options("linux", gpu=lambda: True, answers=_never) == ""
    asked = []
    ti.torch_index_options("linux", gpu=lambda: False, answers=asked.append)
    assert asked == ["https://download.pytorch.org/whl/cpu"]


@pytest.mark.parametrize("smi, devices, expected", [
    (None, [], False),
    ("/usr/bin/nvidia-smi", [], True),
    (None, ["/dev/nvidia0", "/dev/nvidiactl"], True),   # a container given the devices only
    ("/usr/bin/nvidia-smi", ["/dev/nvidia0"], True),
])
def test_a_gpu_is_nvidia_smi_or_its_device_files(smi, devices, expected):
    asked = []

    def which(name):
        asked.append(name)
        return smi

    def glob(pattern):
        asked.append(pattern)
        return devices

    assert ti.has_nvidia_gpu(which, glob) is expected
    assert asked[0] == "nvidia-smi" and set(asked) <= {"nvidia-smi", "/dev/nvidia*"}


class _Response:
    def __init__(self, status):
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_index_that_answers_or_fails_in_any_way():
    urls = []

    def ok(url, timeout):
        urls.append((url, timeout))
        return _Response(200)

    assert ti.index_answers("https://example.invalid/whl/cpu", 3.0, ok)
    assert urls == [("https://example.invalid/whl/cpu/torch/", 3.0)]

    def failing(error):
        def opener(url, timeout):
            raise error
        return opener

    for error in (urllib.error.URLError("Name or service not known"),
                  urllib.error.HTTPError("u", 404, "Not Found", {}, None),
                  TimeoutError("timed out"), ConnectionRefusedError(111, "refused"),
                  ValueError("unknown url type")):
        assert ti.index_answers("https://x", 1.0, failing(error)) is False, error


def test_an_index_that_hangs_is_given_up_on_in_time():
    def hangs(url, timeout):
        time.sleep(30)  # a name lookup that urlopen's timeout does not cover

    start = time.monotonic()
    assert ti.index_answers("https://x", 0.3, hangs) is False
    assert time.monotonic() - start < 2


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        found = self.path == "/whl/cpu/torch/"
        self.send_response(200 if found else 404)
        self.end_headers()
        self.wfile.write(b"<a href='torch-2.13.0+cpu.whl'>torch</a>" if found else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def local_index():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_real_http_index(local_index):
    assert ti.index_answers(f"{local_index}/whl/cpu", 5.0)
    assert not ti.index_answers(f"{local_index}/nowhere", 5.0)  # 404


def test_the_script_prints_one_line_quickly():
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "torch_index.py")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout in ("\n", CPU + "\n")
    assert time.monotonic() - start < ti.TIMEOUT_S + 5


def _setup_commands(*variables: str) -> str:
    """The commands `make setup` would run (make -n, the venv's stamp forced out of date)."""
    done = subprocess.run(["make", "-n", "-B", ".venv/.installed", *variables], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="no make")
def test_make_setup_asks_the_script_unless_told_an_index():
    assert 'index="$(.venv/bin/python tools/torch_index.py)"' in _setup_commands()
    told = _setup_commands("TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu126")
    assert "torch_index.py" not in told
    assert 'index="--index-url=https://download.pytorch.org/whl/cu126"' in told
    # TORCH_INDEX= (empty) is a choice too: the configured index, without asking
    assert 'index=""' in _setup_commands("TORCH_INDEX=")
