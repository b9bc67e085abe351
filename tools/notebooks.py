"""Shared helpers for executing the paired notebooks with this environment's Python."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def read_source(py_path: Path) -> nbformat.NotebookNode:
    """The notebook that a paired .py file describes, inputs only."""
    nb = jupytext.read(py_path)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout_s: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a kernel started from this interpreter (not a kernelspec on PATH)."""
    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        # Local sockets (IPC) rather than TCP on the loopback: nothing else can connect, and the
        # kernel has no reason to print its warning about unencrypted TCP.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "k"))
        km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        client = NotebookClient(nb, km=km, timeout=timeout_s,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()
        finally:  # nbclient leaves a kernel it did not start running
            if km.has_kernel:
                km.shutdown_kernel()
    return nb
