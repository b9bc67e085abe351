"""JupyterLab on the chapters: `make lab` (python tools/lab.py) and, ready to present one
chapter as slides, `make slides CHAPTER=05` (python tools/lab.py --slides 05).

Both write JupyterLab's settings overrides for this environment: a chapter's NN_topic.py opens
as a notebook (jupytext), and JupyterLab does not offer to fetch its news (nothing leaves the
machine). Markdown renders with jupyterlab-myst, as on the site; slides come from
jupyterlab-myst-revealjs (reveal.js inside JupyterLab, MyST included, offline). `--slides`
opens the chapter's NN_topic.ipynb: its Slideshow button (the toolbar's presentation icon)
turns it into slides, cut where cells carry the standard `slideshow` metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"

OVERRIDES = {
    # Open the .py sources as notebooks (jupytext) on a double click.
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook"}},
    # No question about fetching Jupyter's news, and no update check: offline, and in class.
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false", "checkForUpdates": False},
}


class ChapterError(ValueError):
    pass


def chapter_notebook(chapter: str, folder: Path = CHAPTERS) -> Path:
    """The executed notebook of a chapter given as 05, 5, batching or 05_batching."""
    notebooks = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    key = Path(chapter.strip()).name.removesuffix(".ipynb").removesuffix(".py")

    def names(stem: str) -> set[str]:  # 05_batching: 05_batching, 05, 5, batching
        number, _, topic = stem.partition("_")
        return {stem, number, str(int(number)), topic}

    found = [p for p in notebooks if key in names(p.stem)]
    if len(found) != 1:
        names = ", ".join(p.stem for p in notebooks)
        raise ChapterError(f"CHAPTER={chapter!r} names no chapter in {folder.name}/; "
                           f"give its number or its name: {names}")
    return found[0]


def write_overrides(settings_dir: Path) -> Path:
    settings_dir.mkdir(parents=True, exist_ok=True)
    path = settings_dir / "overrides.json"
    path.write_text(json.dumps(OVERRIDES, indent=2) + "\n")
    return path


def lab_command(jupyter: Path, notebook: Path | None = None, as_root: bool = False) -> list[str]:
    """`jupyter lab` on the chapters; with a notebook, the browser opens on it."""
    command = [str(jupyter), "lab", f"--notebook-dir={CHAPTERS}"]
    if notebook is not None:
        command.append(f"--LabApp.default_url=/lab/tree/{notebook.name}")
    if as_root:
        command.append("--allow-root")
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", metavar="CHAPTER",
                        help="open this chapter ready to present (05, 5, batching or 05_batching)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command instead of running it (settings still written)")
    args = parser.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    try:
        notebook = chapter_notebook(args.slides) if args.slides is not None else None
    except ChapterError as err:
        print(f"make slides: {err}", file=sys.stderr)
        return 2
    write_overrides(Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings")
    command = lab_command(bin_dir / "jupyter", notebook, as_root=os.geteuid() == 0)
    if notebook is None:
        print("Open the NN_topic.py files: each opens as a notebook with its outputs; "
              "NN_topic.ipynb is its executed copy for GitHub and Colab.")
    else:
        print(f"Opening {notebook.relative_to(ROOT)}. To present it, click the Slideshow button "
              "in its toolbar (the presentation icon; or the command palette's Open as "
              "Slideshow): arrow keys move, F is full screen, O the overview.")
    if args.dry_run:
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
