"""The book's back matter on the built site: glossary, index of symbols, bibliography, syllabus.

Read from the built site (BOOK_SITE, or one built here, as in tests/test_book_site.py); no
browser is needed.

- The glossary defines every term the chapters are to link with {term}`...`, each in a sentence
  or two and with a link to the chapter that teaches it; it and the index of symbols are in the
  table of contents under "Back matter".
- The index of symbols gathers the chapters' notation, each symbol with a meaning, a unit and a
  chapter.
- The bibliography gives two works of one author and year two labels (a, b), in the list and in
  the text of every citation, and keeps the capitals of each title as references.bib writes it.
- The syllabus covers every chapter, week by week.
"""
from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path

import pytest
from test_book_site import CHAPTERS, ROOT, _parse, built_site, page_files

# The terms the chapters may link with {term}`...`, as the glossary spells them (the role is
# case-insensitive). Aliases are terms too: {term}`paged attention`, {term}`MoE`.
TERMS = [
    "arithmetic intensity", "roofline", "ridge point", "memory bound", "compute bound",
    "prefill", "decode", "KV cache", "TTFT", "TPOT", "goodput", "throughput",
    "continuous batching", "static batching", "chunked prefill", "PagedAttention",
    "paged attention", "critical batch", "GQA", "operator fusion", "FlashAttention",
    "online softmax", "quantization", "mixture of experts", "MoE", "speculative decoding",
    "acceptance rate", "pruning", "distillation", "contextual sparsity", "early exit",
]
SYMBOLS = ["P", "L", "d", "h_{kv}", "B", "N", "S", "G", r"\Pi", r"\beta", "I^{*}", r"\gamma",
           r"\alpha", r"\tau"]


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


def text_of(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def glossary_entries(site: Path) -> dict[str, str]:
    """term -> the HTML of its definition."""
    page = (site / "glossary.html").read_text("utf-8")
    entries = {}
    for dl in re.findall(r'<dl class="[^"]*\bglossary\b[^"]*">(.*?)</dl>', page, re.S):
        for terms, definition in re.findall(r"((?:<dt[^>]*>.*?</dt>\s*)+)<dd>(.*?)</dd>", dl, re.S):
            for term in re.findall(r"<dt[^>]*>(.*?)</dt>", terms, re.S):
                entries[text_of(re.sub(r'<a class="headerlink".*?</a>', "", term))] = definition
    return entries


def test_glossary_defines_every_term_and_links_its_chapter(site):
    entries = glossary_entries(site)
    missing = [t for t in TERMS if t not in entries]
    assert not missing, f"the glossary lacks {missing}; it has {sorted(entries)}"
    for term, definition in entries.items():
        words = len(text_of(definition).split())
        assert 12 <= words <= 90, f"{term!r}: {words} words, not a sentence or two"
        chapters = [h for h in re.findall(r'href="([^"]+)"', definition)
                    if urlparse_path(h).startswith("chapters/")]
        assert chapters, f"{term!r} links no chapter"


def urlparse_path(href: str) -> str:
    return href.split("#")[0]


def test_glossary_links_lead_to_sections(site):
    page = site / "glossary.html"
    for href in _parse(page).links:
        if href.startswith("chapters/"):
            target, _, fragment = href.partition("#")
            assert (site / target).is_file(), href
            assert not fragment or fragment in _parse(site / target).ids, href


def test_back_matter_lists_glossary_symbols_and_bibliography(site):
    intro = (site / "intro.html").read_text("utf-8")
    back = intro.split(">Back matter<", 1)
    assert len(back) == 2, "no 'Back matter' part in the table of contents"
    links = re.findall(r'href="([^"]+)"', back[1].split("</ul>", 1)[0])
    assert links[:3] == ["glossary.html", "symbols.html", "bibliography.html"], links


def test_index_of_symbols_gathers_the_notation(site):
    page = (site / "symbols.html").read_text("utf-8")
    rows = [r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S) if "<td" in r]
    assert len(rows) >= 40, f"only {len(rows)} symbols"
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert len(cells) == 4 and all(text_of(c) for c in cells), text_of(row)
        assert re.search(r'href="chapters/\d\d_\w+\.html', cells[3]), text_of(row)
    for symbol in SYMBOLS:
        assert f"\\({symbol}" in page or f"\\({symbol}\\)" in page, f"no row for ${symbol}$"


def bibliography_labels(site: Path) -> dict[str, list[str]]:
    """Label -> the texts of the entries that carry it, over the whole bibliography page."""
    page = (site / "bibliography.html").read_text("utf-8")
    labels = defaultdict(list)
    for label, body in re.findall(r'<div class="citation"[^>]*>\s*<span class="label">(.*?)</span>'
                                  r"\s*</span>(.*?)</div>", page, re.S):
        labels[text_of(label).strip("[] ")].append(text_of(body))
    return labels


def test_bibliography_labels_tell_works_apart(site):
    labels = bibliography_labels(site)
    assert len(labels) >= 40
    shared = {k: v for k, v in labels.items() if len(v) > 1}
    assert not shared, f"labels that name two works: {shared}"
    lettered = [k for k in labels if re.search(r"\d\d[a-z]$", k)]
    assert lettered, "no a/b label: two works of one author and year should have them"


def test_citations_in_the_text_tell_works_apart(site):
    """'[NVIDIA, 2021a]' and '[NVIDIA, 2021b]': one citation text per work across the site."""
    works_of = defaultdict(set)
    entry = r'<div class="citation" id="([^"]+)"[^>]*>\s*<span class="label">(.*?)</span>\s*</span>'
    for page in page_files(site):
        text = page.read_text("utf-8")
        label_of = {cid: text_of(label).strip("[] ")
                    for cid, label in re.findall(entry, text, re.S)}
        for span in re.findall(r'<span class="bibtex-citation"[^>]*>(.*?)</span>', text, re.S):
            author = text_of(span.split("[", 1)[0])  # {cite:t}: "Chen et al. [2023]"
            for href, shown in re.findall(r'<a class="reference internal" href="#([^"]+)"[^>]*>'
                                          r"(.*?)</a>", span, re.S):
                if href in label_of:
                    works_of[f"{author} [{text_of(shown)}]" if author else text_of(shown)].add(
                        label_of[href])
    assert works_of, "no citation found"
    ambiguous = {k: sorted(v) for k, v in works_of.items() if len(v) > 1}
    assert not ambiguous, f"one citation text for several works: {ambiguous}"


def test_titles_keep_their_capitals(site):
    from pybtex.database import parse_file
    from pybtex.richtext import Text

    page = text_of((site / "bibliography.html").read_text("utf-8"))
    entries = parse_file(str(ROOT / "book" / "references.bib")).entries
    lowered = []
    for key, entry in entries.items():
        title = Text.from_latex(entry.fields["title"]).render_as("text")
        if title not in page:
            lowered.append(f"{key}: {title!r}")
    assert not lowered, f"titles not printed as the .bib writes them: {lowered}"


def test_syllabus_covers_every_chapter(site):
    text = text_of((site / "instructors" / "syllabus.html").read_text("utf-8"))
    links = _parse(site / "instructors" / "syllabus.html").links
    for chapter in CHAPTERS:
        assert any(f"chapters/{chapter}.html" in h for h in links), f"syllabus lacks {chapter}"
    for week in range(1, 11):
        assert f"Week {week}" in text or f"Weeks {week}" in text or f"and {week}:" in text, week
    assert "After chapter 0, students can" in text
    assert "min of reading" in text and " h with the exercises" in text
