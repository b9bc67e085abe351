"""`make lab` and `make slides CHAPTER=NN` (tools/lab.py): the chapter asked for, JupyterLab's
settings, its extensions, and then a chapter in JupyterLab as a reader sees it.

The last test starts JupyterLab on a copy of chapter 5 and opens it in headless Chromium
(Debian's `chromium`; without it, it skips): its MyST renders (admonitions, maths, citations
as citations), its Slideshow turns it into reveal.js slides with the MyST still rendered, and
nothing is asked of any server but JupyterLab's own.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("lab", ROOT / "tools" / "lab.py")
lab = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lab)
JUPYTER = Path(sys.executable).parent / "jupyter"


@pytest.fixture
def chapters(tmp_path) -> Path:
    for name in ("00_how_to_use", "05_batching", "08_moe_and_speculative"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
        (tmp_path / f"{name}.py").write_text("# %%\n")
    return tmp_path


@pytest.mark.parametrize("given, expected", [
    ("05", "05_batching"), ("5", "05_batching"), ("batching", "05_batching"),
    ("05_batching", "05_batching"), ("05_batching.py", "05_batching"),
    ("chapters/05_batching.ipynb", "05_batching"), (" 8 ", "08_moe_and_speculative"),
    ("0", "00_how_to_use"), ("00", "00_how_to_use"),
])
def test_a_chapter_by_number_or_name(chapters, given, expected):
    assert lab.chapter_notebook(given, chapters) == chapters / f"{expected}.ipynb"


@pytest.mark.parametrize("given", ["55", "1", "", "batch", "05_batch", "moe"])
def test_an_unknown_chapter_lists_the_chapters(chapters, given):
    with pytest.raises(lab.ChapterError) as err:
        lab.chapter_notebook(given, chapters)
    assert "00_how_to_use, 05_batching, 08_moe_and_speculative" in str(err.value)


def test_every_chapter_of_the_book_can_be_presented():
    for source in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py")):
        number = source.name[:2]
        assert lab.chapter_notebook(number) == source.with_suffix(".ipynb")


def test_the_settings_open_sources_as_notebooks_and_fetch_no_news(tmp_path):
    written = json.loads(lab.write_overrides(tmp_path / "settings").read_text())
    assert written["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"] == \
        {"python": "Jupytext Notebook"}
    assert written["@jupyterlab/apputils-extension:notification"] == \
        {"fetchNews": "false", "checkForUpdates": False}


def test_the_commands(monkeypatch, tmp_path, capsys):
    jupyter = Path("/venv/bin/jupyter")
    assert lab.lab_command(jupyter) == [str(jupyter), "lab", f"--notebook-dir={lab.CHAPTERS}"]
    slides = lab.lab_command(jupyter, lab.CHAPTERS / "05_batching.ipynb", as_root=True)
    assert slides[3:] == ["--LabApp.default_url=/lab/tree/05_batching.ipynb", "--allow-root"]
    monkeypatch.setattr(lab.sys, "prefix", str(tmp_path))
    assert lab.main(["--slides", "05", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "chapters/05_batching.ipynb" in out and "Slideshow button" in out
    assert "--LabApp.default_url=/lab/tree/05_batching.ipynb" in out
    assert (tmp_path / "share/jupyter/lab/settings/overrides.json").exists()
    assert lab.main(["--slides", "55", "--dry-run"]) == 2
    assert "make slides: CHAPTER='55' names no chapter" in capsys.readouterr().err


def test_make_lab_and_make_slides_call_the_tool():
    def commands(*argv: str) -> str:
        done = subprocess.run(["make", "-n", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert ".venv/bin/python tools/lab.py\n" in commands("lab")
    assert '.venv/bin/python tools/lab.py --slides "05"' in commands("slides", "CHAPTER=05")


def _extensions() -> dict[str, str]:
    done = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True,
                          text=True, timeout=120)
    listed = {}
    for line in (done.stdout + done.stderr).splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].startswith("v"):
            listed[words[0]] = words[2]
    return listed


def test_both_extensions_are_installed_and_enabled():
    pytest.importorskip("jupyterlab", reason="JupyterLab is in the [lab] extra")
    listed = _extensions()
    for name in ("jupyterlab-myst", "jupyterlab-myst-revealjs", "jupyterlab-jupytext"):
        assert name in listed, f"{name} not in `jupyter labextension list`: {sorted(listed)}"
        assert "enabled" in listed[name], (name, listed[name])


# ---- in a browser ---------------------------------------------------------------------------

WAIT_FOR = """new Promise((resolve) => {
  const start = Date.now();
  const poll = () => {
    const found = document.querySelectorAll(%s).length;
    if (found >= %d || Date.now() - start > %d) resolve(found); else setTimeout(poll, 250);
  };
  poll();
})"""


def _wait_for(browser, selector: str, at_least: int = 1, timeout_s: float = 60) -> int:
    return browser.evaluate(WAIT_FOR % (json.dumps(selector), at_least, timeout_s * 1000))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a copy of chapter 5, with the settings `make slides` writes."""
    pytest.importorskip("jupyterlab_myst", reason="jupyterlab-myst is in the [lab] extra")
    pytest.importorskip("jupyterlab_myst_revealjs", reason="in the [lab] extra")
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    for suffix in (".ipynb", ".py"):
        shutil.copy(ROOT / "chapters" / f"05_batching{suffix}", chapters)
    lab.write_overrides(tmp_path / "settings")
    port, token = _free_port(), "llmperf-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user-settings")}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--notebook-dir={chapters}",
         f"--LabApp.app_settings_dir={tmp_path / 'settings'}", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "lab.log").read_text()
                assert time.monotonic() < deadline, "JupyterLab did not start"
                time.sleep(0.5)
        yield base, token
    finally:
        server.send_signal(signal.SIGTERM)  # it shuts its kernels down
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _outside_and_errors(events: list[dict], base: str) -> list[str]:
    found = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith((base, "ws://127.0.0.1", "data:", "blob:", "about:")):
                found.append(f"request outside JupyterLab: {url}")
        elif e["method"] == "Runtime.exceptionThrown":
            found.append(str(p["exceptionDetails"].get("exception", {}).get("description")))
        elif e["method"] == "Runtime.consoleAPICalled" and p["type"] == "error":
            message = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            # jupyterlab-myst sees one notebook: the book's glossary ({term}) is elsewhere
            if not message.startswith("Cross reference target was not found"):
                found.append(message)
    return found


def test_a_chapter_renders_its_myst_in_jupyterlab_and_as_slides(jupyterlab, tmp_path):
    base, token = jupyterlab
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_book_site import CHROMIUM, Browser
    finally:
        sys.path.remove(str(ROOT / "tests"))
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client is in the test extra")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = Browser(CHROMIUM, Path(profile))
        try:
            browser.events = []
            browser.call("Page.navigate", url=f"{base}/lab/tree/05_batching.ipynb?token={token}")
            # The notebook: MyST's admonitions (asides), KaTeX maths, citations as citations.
            assert _wait_for(browser, ".jp-Notebook .myst") > 0
            assert _wait_for(browser, ".jp-Notebook .katex", 20) >= 20
            text = browser.evaluate("document.querySelector('.jp-Notebook').innerText")
            assert "After this chapter you will be able to" in text
            assert not [raw for raw in (":::{", "{cite:p}", "{term}") if raw in text]
            assert browser.evaluate("Array.from(document.querySelectorAll('.jp-Notebook aside'))"
                                    ".some(a => a.innerText.includes('After this chapter'))")
            assert browser.evaluate("document.querySelectorAll('.jp-Notebook .cite-group')"
                                    ".length") > 0
            browser.screenshot(tmp_path / "notebook.png")
            # Its Slideshow button: reveal.js slides, the MyST still rendered.
            assert browser.evaluate(
                "(() => { const b = document.querySelector("
                "'.jp-NotebookPanel-toolbar [data-command=\"slideshow:open\"] button, "
                ".jp-NotebookPanel-toolbar [data-command=\"slideshow:open\"]');"
                " if (b) b.click(); return !!b; })()")
            assert _wait_for(browser, ".reveal .slides section") > 0
            assert _wait_for(browser, ".reveal .katex", 20) >= 20
            slides = browser.evaluate("document.querySelector('.reveal').innerText")
            assert "After this chapter you will be able to" in slides
            assert not [raw for raw in (":::{", "{cite:p}", "{term}") if raw in slides]
            assert browser.evaluate("document.querySelectorAll('.reveal aside').length") > 0
            browser.screenshot(tmp_path / "slides.png")
            browser.settle(quiet_s=1)
            assert _outside_and_errors(browser.events, base) == []
        finally:
            browser.close()
