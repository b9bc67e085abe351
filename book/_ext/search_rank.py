"""Search that lists the chapter first, with snippets a reader can read.

Sphinx scores a page by where a word occurs (its title, a heading, anywhere in the text), not by
how often: "roofline" in the title of a benchmark's results page outranks the chapter that
teaches the roofline. On the search page this extension loads search_rank.js, which

- ranks chapters above the other pages, and first the chapter that the glossary names for the
  word searched (each glossary definition links to the chapter that teaches the term; this
  extension collects those links as the glossary page is written);
- writes each result's snippet from the page's prose: the download menu's file names and the
  heading marks are left out, and TeX becomes plain text ("\\(h_{kv}\\)" reads "h_kv").
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx

SCRIPT = Path(__file__).with_name("search_rank.js")
GLOSSARY = "glossary"


def _chapter_of(definition: nodes.Element) -> str | None:
    """The first chapter a glossary definition links to, as a docname."""
    for ref in definition.findall(nodes.reference):
        uri = ref.get("refuri", "")
        path = uri.split("#")[0].removesuffix(".html")
        if path.startswith("chapters/"):
            return path
    for ref in definition.findall(addnodes.pending_xref):  # not resolved yet
        target = ref.get("reftarget", "")
        if target.lstrip("/").startswith("chapters/"):
            return target.lstrip("/").removesuffix(".ipynb")
    return None


def collect_terms(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if docname != GLOSSARY:
        return
    terms = {}
    for item in doctree.findall(nodes.definition_list_item):
        definitions = [c for c in item.children if isinstance(c, nodes.definition)]
        chapter = _chapter_of(definitions[0]) if definitions else None
        if chapter is None:
            continue
        for term in item.findall(nodes.term):
            terms[term.astext().strip().lower()] = chapter
    app.env.llmperf_search_terms = terms


def add_script(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if pagename != "search":
        return
    terms = getattr(app.env, "llmperf_search_terms", {})
    app.add_js_file(None, body=f"var LLMPERF_TERMS = {json.dumps(terms, sort_keys=True)};")
    app.add_js_file("search_rank.js")


def copy_script(app: Sphinx, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copy2(SCRIPT, Path(app.outdir) / "_static" / SCRIPT.name)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", collect_terms)
    app.connect("html-page-context", add_script)
    app.connect("build-finished", copy_script)
    return {"parallel_read_safe": True, "parallel_write_safe": False}
