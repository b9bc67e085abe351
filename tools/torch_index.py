"""Where `make setup` should install torch from: prints pip's index options, or nothing.

On Linux without an NVIDIA GPU, PyPI's torch wheel is the CUDA build (some gigabytes of
libraries a CPU cannot use), so this prints PyTorch's CPU index, provided that index answers
within a few seconds. Everywhere else (a GPU, macOS, Windows, an index that does not answer:
offline, behind a mirror) it prints nothing and pip installs from its configured index as
usual. Standard library only: it runs before anything is installed.

    $(BIN)/python tools/torch_index.py        ->  --extra-index-url=https://download.pytorch.org/whl/cpu
                                                  (or an empty line)
"""
from __future__ import annotations

import glob
import shutil
import sys
import threading
import urllib.request
from collections.abc import Callable

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TIMEOUT_S = 5.0


def has_nvidia_gpu(which: Callable[[str], str | None] = shutil.which,
                   devices: Callable[[str], list[str]] = glob.glob) -> bool:
    """An NVIDIA driver is installed: nvidia-smi on PATH, or /dev/nvidia* device files."""
    return which("nvidia-smi") is not None or bool(devices("/dev/nvidia*"))


def index_answers(url: str = CPU_INDEX, timeout_s: float = TIMEOUT_S,
                  opener: Callable[..., object] = urllib.request.urlopen) -> bool:
    """Whether `url`/torch/ answers with a page within `timeout_s` in all (an HTTP error, a
    DNS failure, no connection, no answer in time: False).

    The request runs in a thread given `timeout_s` to finish: urlopen's own timeout does not
    cover the name lookup, which can hang where there is no network.
    """
    answer: list[bool] = []

    def ask() -> None:
        try:
            with opener(f"{url}/torch/", timeout=timeout_s) as response:
                answer.append(200 <= getattr(response, "status", 200) < 300)
        except (OSError, ValueError):  # URLError, HTTPError and timeouts are OSErrors
            answer.append(False)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer) and answer[0]


def torch_index_options(platform: str = sys.platform,
                        gpu: Callable[[], bool] = has_nvidia_gpu,
                        answers: Callable[[str], bool] = index_answers) -> str:
    """pip's options for installing torch here: the CPU index on a GPU-less Linux machine that
    reaches it, else "" (the configured index). The index is asked only when it would be used."""
    if not platform.startswith("linux") or gpu():
        return ""
    return f"--extra-index-url={CPU_INDEX}" if answers(CPU_INDEX) else ""


def main() -> int:
    print(torch_index_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
