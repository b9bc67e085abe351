"""The book's site, read the way a reader reads it: every page opened in headless Chromium.

The site under test is BOOK_SITE (a built _build/html, as `make check-book` passes it) or,
without it, a site built here from the committed notebooks with `tools/book.py --no-execute`.
Pages are served on 127.0.0.1 and each is checked for console errors, failed requests or any
request that leaves the server, maths that MathJax did not typeset or flagged as an error,
images that did not load and internal links that lead nowhere; the search page must find a word
that every chapter uses. A screenshot of each page is kept in screenshots/ beside the site.
Drawn as a reader sees them at 1366 px: figures at 70 % of their natural width or more, tables
with room around each cell and their numbers right-aligned, one search box at desktop widths,
and search that lists first the chapter that teaches a term, with snippets free of TeX.

Chromium is Debian's `chromium` package, found on PATH; without it the browser tests skip.
"""
from __future__ import annotations

import atexit
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from base64 import b64decode
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.py"))
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
SEARCH_WORD = "model"  # every chapter uses it
WINDOW = (1366, 900)


# --- the site ---------------------------------------------------------------------------------

@functools.cache
def built_site() -> Path:
    """The folder of the built site (index.html); its parent holds warnings.txt.

    Built once per test run, whichever test module asks first (tests/test_site_*.py share it).
    """
    given = os.environ.get("BOOK_SITE")
    if given:
        html = Path(given).resolve()
        assert (html / "index.html").exists(), f"{html}: no index.html, run `make book` first"
        return html
    out = Path(tempfile.mkdtemp(prefix="book-site-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "book.py"), "--no-execute",
                          "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return out / "html"


@pytest.fixture(scope="session")
def site() -> Path:
    return built_site()


def page_files(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html")
                  if not p.relative_to(site).parts[0].startswith("_"))


def test_build_has_no_warnings(site):
    warnings = (site.parent / "warnings.txt").read_text(encoding="utf-8").strip()
    assert not warnings, f"the site's build warned:\n{warnings}"


def test_every_chapter_is_a_page_of_the_site(site):
    pages = {p.relative_to(site).as_posix() for p in page_files(site)}
    missing = [c for c in CHAPTERS if f"chapters/{c}.html" not in pages]
    assert not missing, f"chapters without a page: {missing}"
    for page in ("index.html", "exercises/index.html", "instructors/index.html",
                 "instructors/syllabus.html", "glossary.html", "symbols.html",
                 "benchmarks/README.html", "search.html"):
        assert page in pages, f"{page} is missing"
    assert any(p.startswith("benchmarks/results/") for p in pages), "no benchmark results page"


def test_downloads_offer_each_chapters_ipynb_and_py(site):
    for chapter in CHAPTERS:
        text = (site / "chapters" / f"{chapter}.html").read_text(encoding="utf-8")
        for suffix in (".ipynb", ".py"):
            href = f"../_sources/chapters/{chapter}{suffix}"
            assert f'href="{href}"' in text, f"{chapter}: no download link to {suffix}"
            assert (site / "_sources" / "chapters" / f"{chapter}{suffix}").is_file()


def test_mathjax_is_served_from_the_site(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    fonts = list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert any("MathJax_Main-Regular" in f.name for f in fonts), "MathJax's TeX fonts are missing"
    for page in page_files(site):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert not remote, f"{page.relative_to(site)} loads {remote}"


# --- links, checked against the files -----------------------------------------------------------

class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


@functools.cache
def _parse(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def broken_links(site: Path, page: Path) -> list[str]:
    """Internal links of a page whose file or fragment does not exist in the site."""
    broken = []
    for href in _parse(page).links:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(site.resolve()) or not target.exists():
            broken.append(href)
        elif (parts.fragment and target.suffix == ".html"
              and parts.fragment not in _parse(target).ids):
            broken.append(href)
    return broken


def test_internal_links_resolve(site):
    broken = {p.relative_to(site).as_posix(): b for p in page_files(site)
              if (b := broken_links(site, p))}
    assert not broken, f"links that lead nowhere: {json.dumps(broken, indent=1)}"


# --- the browser --------------------------------------------------------------------------------

class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, one websocket)."""

    def __init__(self, executable: str, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--lang=en-US", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before it listened")
            if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
        assert port, "chromium did not open its DevTools port"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.call("Network.setCacheDisabled", cacheDisabled=True)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e["method"] == method for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True, timeout=30000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def settle(self, quiet_s: float = 0.5, timeout: float = 10) -> None:
        """Read events until the network has been quiet for quiet_s."""
        last, deadline = time.monotonic(), time.monotonic() + timeout
        self.ws.settimeout(quiet_s)
        while time.monotonic() - last < quiet_s and time.monotonic() < deadline:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:  # websocket timeout: quiet
                break
            if "method" in msg:
                self.events.append(msg)
                last = time.monotonic()
        self.ws.settimeout(30)

    def open(self, url: str) -> None:
        self.events = []
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        # A page that forwards the reader (index.html's meta refresh to intro.html) starts
        # loading again after its load event: wait for that second load to finish too.
        self.settle()
        methods = [e["method"] for e in self.events]
        first_load = methods.index("Page.loadEventFired")
        if "Page.frameStartedLoading" in methods[first_load:]:
            deadline = time.monotonic() + 30
            while ([e["method"] for e in self.events].count("Page.loadEventFired") < 2
                   and time.monotonic() < deadline):
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            # Chromium and its helpers share the process group this test started for them.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


# Run in the page once it has loaded: waits for MathJax and the images, then reports.
PAGE_REPORT = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  for (const img of document.images) { img.loading = "eager"; }
  const images = await Promise.all([...document.images].map(
    img => img.decode().then(() => null, () => img.getAttribute("src"))));
  await document.fonts.ready;
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
  const article = document.querySelector("article") || document.body;
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  let text = "";
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest(skip)) { text += node.textContent; }
  }
  const rawTex = [];
  const patterns = [/\$\$[^$]+\$\$/g, /\$[^\s$][^$\n]{0,200}?\$/g, /\\\(.{1,200}?\\\)/g,
                    /\\\[[\s\S]{1,400}?\\\]/g, /\\begin\{/g];
  for (const re of patterns) { for (const m of text.matchAll(re)) { rawTex.push(m[0]); } }
  const mathErrors = [...document.querySelectorAll(
      "mjx-merror, [data-mjx-error], .MathJax_Error, .mjx-merror")].map(
      e => e.getAttribute("data-mjx-error") || e.textContent);
  if (document.body.innerText.includes("Math Processing Error")) {
    mathErrors.push("[Math Processing Error]");
  }
  const untypeset = [...document.querySelectorAll(".math")].filter(
      e => !e.querySelector("mjx-container")).map(e => e.textContent.slice(0, 80));
  const fonts = [...document.fonts].filter(f => f.status === "error").map(f => f.family);
  return {
    title: document.title,
    rawTex: rawTex.slice(0, 10), rawTexCount: rawTex.length,
    mathErrors, untypeset: untypeset.slice(0, 10), fonts,
    typeset: document.querySelectorAll("mjx-container").length,
    brokenImages: images.filter(s => s !== null),
    visibleText: document.body.innerText,
  };
})()
"""

# In a chapter: what a reader sees of its structure.
CHAPTER_REPORT = r"""
(() => {
  const visible = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const section = document.querySelector("section[id^='worked-problems']");
  const outputs = section ? [...section.querySelectorAll(".cell_output")] : [];
  const shown = outputs.filter(o => visible(o) && !o.closest("details:not([open])"))
                       .map(o => o.innerText.slice(0, 120));
  return {
    sidebar: [...document.querySelectorAll("nav.bd-docs-nav a")].map(a => a.getAttribute("href")),
    pageToc: document.querySelectorAll("nav.page-toc a").length,
    prevNext: [...document.querySelectorAll(".prev-next-area a")].length,
    workedProblems: !!section,
    answersShownOutsideFolds: shown,
    foldedAnswers: document.querySelectorAll("details").length,
  };
})()
"""

# Every figure of the article: its natural width against the width it is drawn at.
FIGURE_REPORT = r"""
(() => [...document.querySelectorAll("article img")].filter(img => img.naturalWidth > 0).map(
  img => {
    const section = img.closest("section[id]");
    // The chapters caption a figure in the paragraph after its cell: "**Figure 3.** ...".
    const cell = img.closest(".cell");
    const after = cell && cell.nextElementSibling ? cell.nextElementSibling.innerText : "";
    const caption = (after.match(/^Figure \d+\./) || [""])[0];
    return {src: img.getAttribute("src"), section: section ? section.id : "", caption,
            natural: img.naturalWidth, rendered: img.getBoundingClientRect().width};
  }))()
"""

# Every table of the article, as a reader sees it: cells without room on both sides, numbers
# not aligned to the right in a column of numbers, and neighbouring cells whose text runs
# together (less than MIN_GAP_PX between the ink of one cell and the next).
MIN_PADDING_PX = 6
MIN_GAP_PX = 8
TABLE_REPORT = r"""
((minPadding, minGap) => {
  const number = /^[-+−]?\d[\d,]*(\.\d+)?([eE][-+]?\d+)?\s?(%|x|×)?$/;
  const inkOf = cell => {   // the boxes of what the cell shows: its text, its maths
    const rects = [];
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      if (!walker.currentNode.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(walker.currentNode);
      rects.push(...range.getClientRects());
    }
    cell.querySelectorAll("mjx-container, img").forEach(e => rects.push(e.getBoundingClientRect()));
    const real = rects.filter(r => r.width > 0 && r.height > 0);
    if (!real.length) return null;
    return {left: Math.min(...real.map(r => r.left)), right: Math.max(...real.map(r => r.right))};
  };
  const problems = [];
  // Sphinx's general index lays its columns out with a table: not data.
  document.querySelectorAll("article table:not(.indextable)").forEach((table, t) => {
    const name = (table.caption ? table.caption.innerText : "") ||
                 `table ${t + 1} (${(table.rows[0] || {innerText: ""}).innerText.slice(0, 40)})`;
    const cells = [...table.querySelectorAll("th, td")];
    const cramped = cells.filter(c => {
      const s = getComputedStyle(c);
      return parseFloat(s.paddingLeft) < minPadding || parseFloat(s.paddingRight) < minPadding;
    });
    if (cramped.length) {
      problems.push(`${name}: ${cramped.length} cells with under ${minPadding} px of padding`);
    }
    const body = [...table.querySelectorAll("tbody tr")].map(r => [...r.cells]);
    const width = Math.max(0, ...body.map(r => r.length));
    for (let j = 0; j < width; j++) {
      const column = body.map(r => r[j]).filter(c => c && c.innerText.trim());
      if (!column.length || !column.every(c => number.test(c.innerText.trim()))) continue;
      const left = column.filter(c => !["right", "end"].includes(getComputedStyle(c).textAlign));
      if (left.length) {
        const example = left[0].innerText.trim();
        problems.push(`${name}: column ${j + 1} of numbers not right-aligned (${example})`);
      }
    }
    for (const row of table.rows) {
      const inks = [...row.cells].map(inkOf);
      for (let j = 1; j < inks.length; j++) {
        const gap = inks[j - 1] && inks[j] ? inks[j].left - inks[j - 1].right : Infinity;
        if (gap < minGap) {
          const [a, b] = [row.cells[j - 1], row.cells[j]].map(c => c.innerText.trim().slice(0, 20));
          problems.push(`${name}: "${a}" and "${b}" run together (${gap.toFixed(1)} px apart)`);
          break;
        }
      }
    }
  });
  return problems;
})(MIN_PADDING_PX, MIN_GAP_PX)
""".replace("MIN_PADDING_PX", str(MIN_PADDING_PX)).replace("MIN_GAP_PX", str(MIN_GAP_PX))

SEARCH_REPORT = r"""
(async () => {
  // Sphinx lists hits one by one and writes the summary when it has finished.
  for (let i = 0; i < 200 && !document.querySelector("#search-results .search-summary"); i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  await new Promise(r => setTimeout(r, 500));
  return [...document.querySelectorAll("#search-results li a")].map(a => a.getAttribute("href"));
})()
"""


SCROLL_TO_MATHS = r"""
(() => {
  const display = document.querySelector("article mjx-container[display='true']");
  if (!display) { return false; }
  display.scrollIntoView({block: "center"});
  return true;
})()
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@functools.cache
def serve(site: Path) -> str:
    """The site on 127.0.0.1, once per test run: its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    atexit.register(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def served(site):
    return serve(site)


@functools.cache
def shared_browser() -> Browser:
    """One Chromium for the whole test run, closed when the run ends."""
    profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    b = Browser(CHROMIUM, Path(profile.name))
    atexit.register(profile.cleanup)
    atexit.register(b.close)  # atexit runs in reverse: the browser closes first
    return b


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client is in the test extra")
    b = shared_browser()
    b.call("Emulation.clearDeviceMetricsOverride")
    return b


def _problems(events: list[dict], origin: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"console": [], "requests": []}
    requests = {}
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            found["console"].append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            found["console"].append(d.get("exception", {}).get("description", d.get("text")))
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            found["console"].append(f"{p['entry'].get('url', '')}: {p['entry']['text']}")
        elif e["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            requests[p["requestId"]] = url
            if not url.startswith((origin, "data:", "blob:", "about:")):
                found["requests"].append(f"outside the site: {url}")
        elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
            found["requests"].append(f"failed ({p['errorText']}): {requests.get(p['requestId'])}")
        elif e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
            found["requests"].append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return found


@pytest.fixture(scope="session")
def pages(site, served, browser):
    """Every page opened in the browser: {relative path: report}; screenshots kept."""
    shots = site.parent / "screenshots"
    if shots.exists():
        shutil.rmtree(shots)
    reports = {}
    for path in page_files(site):
        rel = path.relative_to(site).as_posix()
        browser.open(served + rel)
        report = browser.evaluate(PAGE_REPORT)
        report["figures"] = browser.evaluate(FIGURE_REPORT)
        report["tables"] = browser.evaluate(TABLE_REPORT)
        if rel.startswith("chapters/"):
            report["chapter"] = browser.evaluate(CHAPTER_REPORT)
        browser.settle()
        report.update(_problems(browser.events, served))
        name = rel.replace("/", "__").removesuffix(".html")
        browser.screenshot(shots / f"{name}.png")
        if browser.evaluate(SCROLL_TO_MATHS):  # a second picture, of the first displayed maths
            browser.screenshot(shots / f"{name}__maths.png")
        reports[rel] = report
    return reports


def _failures(pages: dict, key: str) -> dict:
    return {rel: r[key] for rel, r in pages.items() if r[key]}


def test_screenshots_are_kept(site, pages):
    shots = site.parent / "screenshots"
    assert len([s for s in shots.glob("*.png") if not s.stem.endswith("__maths")]) == len(pages)
    assert list(shots.glob("chapters__*__maths.png")), "no screenshot shows a chapter's maths"


def test_no_console_errors(pages):
    assert not (f := _failures(pages, "console")), json.dumps(f, indent=1)


def test_no_failed_or_outside_requests(pages):
    assert not (f := _failures(pages, "requests")), json.dumps(f, indent=1)


def test_images_load(pages):
    assert not (f := _failures(pages, "brokenImages")), json.dumps(f, indent=1)


def test_mathjax_reports_no_errors(pages):
    assert not (f := _failures(pages, "mathErrors")), json.dumps(f, indent=1)
    assert not (f := _failures(pages, "fonts")), f"fonts that failed: {json.dumps(f, indent=1)}"


def test_no_maths_left_untypeset(pages):
    failures = {rel: {"raw TeX in the text": r["rawTex"], "math not typeset": r["untypeset"]}
                for rel, r in pages.items() if r["rawTex"] or r["untypeset"]}
    assert not failures, json.dumps(failures, indent=1)
    assert all(pages[f"chapters/{c}.html"]["typeset"] > 0 for c in CHAPTERS)


def test_code_shows_no_prompts_or_nbval_markers(pages):
    failures = {rel: [m for m in ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP", "In [")
                      if m in r["visibleText"]] for rel, r in pages.items()}
    assert not {k: v for k, v in failures.items() if v}, failures


def test_chapters_have_sidebar_page_contents_and_neighbours(pages):
    for chapter in CHAPTERS:
        r = pages[f"chapters/{chapter}.html"]["chapter"]
        linked = {Path(urlsplit(h).path).stem or chapter for h in r["sidebar"]}
        assert set(CHAPTERS) <= linked, f"{chapter}: sidebar lacks {set(CHAPTERS) - linked}"
        assert r["pageToc"] >= 3, f"{chapter}: no in-page contents"
        assert r["prevNext"] >= 1, f"{chapter}: no previous/next links"


def test_worked_problems_show_answers_only_in_folds(pages):
    failures = {}
    for chapter in CHAPTERS:
        r = pages[f"chapters/{chapter}.html"]["chapter"]
        if r["workedProblems"] and r["answersShownOutsideFolds"]:
            failures[chapter] = r["answersShownOutsideFolds"]
    assert not failures, f"outputs shown outside a fold under 'Worked problems': {failures}"


def test_landing_page_lists_every_chapter(site, pages):
    index = (site / "index.html").read_text(encoding="utf-8")
    target = re.search(r'url=([^"]+)"', index)
    landing = target.group(1) if target else "index.html"
    links = _parse((site / landing).resolve()).links
    for chapter in CHAPTERS:
        assert any(f"chapters/{chapter}.html" in h for h in links), f"{landing}: no {chapter}"


def test_search_finds_a_word_every_chapter_uses(served, browser):
    browser.open(served + f"search.html?q={SEARCH_WORD}")
    hits = browser.evaluate(SEARCH_REPORT)
    browser.settle()
    problems = _problems(browser.events, served)
    assert not problems["console"] and not problems["requests"], problems
    found = {Path(urlsplit(urljoin(served + "search.html", h)).path).stem for h in hits}
    assert set(CHAPTERS) <= found, f"search for {SEARCH_WORD!r} missed {set(CHAPTERS) - found}"


# --- figures and tables, as drawn -----------------------------------------------------------------

MIN_FIGURE_SHARE = 0.70  # a figure drawn narrower than this share of its pixels is hard to read


def test_figures_are_drawn_at_least_70_percent_of_their_natural_width(pages):
    """A figure squeezed into the text column shrinks its lettering with it: at 1366 px wide,
    every figure must be drawn at 70 % of its natural width or more (make it narrower, or
    with fewer pixels per inch, when it is not)."""
    small = {}
    for rel, r in pages.items():
        for f in r["figures"]:
            share = f["rendered"] / f["natural"]
            if share < MIN_FIGURE_SHARE:
                small.setdefault(rel, []).append(
                    f"{f['caption'] or 'a figure'} in section {f['section']!r}: "
                    f"{f['natural']} px wide, drawn at {f['rendered']:.0f} px ({share:.1%})")
    assert not small, f"figures drawn below {MIN_FIGURE_SHARE:.0%}: {json.dumps(small, indent=1)}"


def test_tables_have_room_and_align_their_numbers(pages):
    assert not (f := _failures(pages, "tables")), json.dumps(f, indent=1)


# --- one search box, and search that finds the chapter -------------------------------------------

VISIBLE_SEARCH_BOXES = r"""
(() => {
  const visible = e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && !e.closest("dialog");
  };
  return [...document.querySelectorAll(".search-button-field, .search-button, form.bd-search")]
    .filter(visible).map(e => e.className);
})()
"""


@pytest.mark.parametrize("width", [1024, 1280, 1366, 1920])
def test_one_search_box_at_desktop_width(served, browser, width):
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                 deviceScaleFactor=1, mobile=False)
    try:
        browser.open(served + "chapters/04_boundedness.html")
        boxes = browser.evaluate(VISIBLE_SEARCH_BOXES)
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    assert len(boxes) == 1, f"{width} px: {len(boxes)} search boxes: {boxes}"


def test_a_phone_can_still_search(served, browser):
    browser.call("Emulation.setDeviceMetricsOverride", width=400, height=800,
                 deviceScaleFactor=1, mobile=True)
    try:
        browser.open(served + "chapters/04_boundedness.html")
        boxes = browser.evaluate(VISIBLE_SEARCH_BOXES)
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    assert boxes, "no search box or button at 400 px"


SEARCH_RESULTS = r"""
(async () => {
  for (let i = 0; i < 200 && !document.querySelector("#search-results .search-summary"); i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  // Each result's snippet arrives with its page: wait until every one has it, or 5 s.
  const items = () => [...document.querySelectorAll("#search-results li")];
  for (let i = 0; i < 50 && items().some(li => !li.querySelector(".context")); i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  return items().map(li => ({href: li.querySelector("a").getAttribute("href"),
                             snippet: (li.querySelector(".context") || {}).textContent || ""}));
})()
"""


def search(served, browser, query: str) -> list[dict]:
    browser.open(served + "search.html?q=" + urllib.parse.quote(query))
    results = browser.evaluate(SEARCH_RESULTS)
    browser.settle()
    problems = _problems(browser.events, served)
    assert not problems["console"] and not problems["requests"], problems
    return results


@pytest.mark.parametrize("query, chapter", [
    ("roofline", "04_boundedness"), ("ridge point", "04_boundedness"),
    ("KV cache", "03_dependencies"), ("goodput", "05_batching"),
    ("FlashAttention", "07_fusion"), ("speculative decoding", "08_moe_and_speculative"),
])
def test_search_lists_the_chapter_that_teaches_a_term_first(served, browser, query, chapter):
    hits = search(served, browser, query)
    assert hits, f"{query!r}: nothing found"
    first = urlsplit(hits[0]["href"]).path
    assert first.startswith("chapters/"), f"{query!r}: the first result is {first}, not a chapter"
    assert first == f"chapters/{chapter}.html", f"{query!r}: first {first}, not chapter {chapter}"


@pytest.mark.parametrize("query", ["bandwidth", "batch"])
def test_search_lists_chapters_before_other_pages(served, browser, query):
    pages = [urlsplit(h["href"]).path for h in search(served, browser, query)]
    chapters = [i for i, p in enumerate(pages) if p.startswith("chapters/")]
    others = [i for i, p in enumerate(pages) if not p.startswith(("chapters/", "glossary"))]
    assert chapters and others and max(chapters) < min(others), pages


RAW_TEX = re.compile(r"\\[()\[\]]|\\[A-Za-z]+|\$")
STRAY_FILE_NAME = re.compile(r"(?:^|\s)\.(?:ipynb|py|md|pdf)\b")


@pytest.mark.parametrize("query", ["roofline", "bandwidth", "attention"])
def test_search_snippets_have_no_tex_or_file_names(served, browser, query):
    hits = search(served, browser, query)
    bad = {h["href"]: h["snippet"] for h in hits
           if RAW_TEX.search(h["snippet"]) or STRAY_FILE_NAME.search(h["snippet"])}
    assert all(h["snippet"] for h in hits), [h["href"] for h in hits if not h["snippet"]]
    assert not bad, json.dumps(bad, indent=1)
