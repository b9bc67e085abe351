/* Loaded on search.html only, before Sphinx's searchtools.js (book/_ext/search_rank.py).
 *
 * 1. Scorer: Sphinx's default weights, and a score() that ranks chapters above the other pages
 *    and the chapter that the glossary names for the query above every page.
 * 2. Snippets: Search.htmlToText reads the article's prose only, with TeX made readable.
 */
"use strict";

var Scorer = {
  objNameMatch: 11,
  objPartialMatch: 6,
  objPrio: { 0: 15, 1: 5, 2: -5 },
  objPrioDefault: 0,
  title: 15,
  partialTitle: 7,
  term: 5,
  partialTerm: 2,

  // result: [docname, title, anchor, descr, score, filename]. Sphinx's own scores stay below
  // 1000 (an index entry that matches the whole query scores 100), so a tier times 1000 orders
  // the groups and Sphinx's score orders the pages within one: first the chapter that the
  // glossary names for the query, then the glossary, the chapters, the other pages, and last
  // the benchmarks' result tables.
  score: (result) => {
    const [docname, , , , score] = result;
    const query = (new URLSearchParams(window.location.search).get("q") || "")
      .trim().toLowerCase().replace(/\s+/g, " ");
    const terms = (typeof LLMPERF_TERMS === "undefined") ? {} : LLMPERF_TERMS;
    let tier = 1;
    if (terms[query] === docname) tier = 4;
    else if (docname === "glossary" && query in terms) tier = 3;
    else if (docname.startsWith("chapters/")) tier = 2;
    else if (docname.startsWith("benchmarks/results/")) tier = 0;
    return tier * 1000 + score;
  },
};

const LLMPERF_TEX = {
  alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", theta: "θ", lambda: "λ",
  mu: "μ", pi: "π", sigma: "σ", tau: "τ", phi: "φ", omega: "ω", ell: "ℓ", Pi: "Π",
  Sigma: "Σ", Theta: "Θ", Delta: "Δ", times: "×", cdot: "·", approx: "≈", le: "≤",
  leq: "≤", ge: "≥", geq: "≥", ll: "≪", gg: "≫", ne: "≠", neq: "≠", infty: "∞", to: "→",
  rightarrow: "→", lceil: "⌈", rceil: "⌉", lfloor: "⌊", rfloor: "⌋", pm: "±", sqrt: "√",
  propto: "∝", dots: "…", ldots: "…", cdots: "⋯", in: "∈", sum: "Σ", max: "max", min: "min",
  log: "log", exp: "exp", top: "ᵀ", mid: "|", lvert: "|", rvert: "|", Vert: "‖",
};

/* TeX as a reader would say it in plain text: "\(I^{*} = \Pi/\beta\)" -> "I^* = Π/β". */
function llmperfTexToText(tex) {
  let s = tex.replace(/^\s*(\\\(|\\\[|\$\$?)/, "").replace(/(\\\)|\\\]|\$\$?)\s*$/, "");
  s = s.replace(/\\(?:text|mathrm|operatorname|mathbf|mathit|textbf|mathcal|mathbb)\s*\{([^{}]*)\}/g, "$1");
  s = s.replace(/\\[tdc]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}/g, "($1)/($2)");
  s = s.replace(/\\begin\{[a-z*]+\}|\\end\{[a-z*]+\}/g, " ");
  s = s.replace(/\\(left|right|big|Big|bigg|Bigg)\b/g, "");
  s = s.replace(/\\([A-Za-z]+)/g, (m, name) => (name in LLMPERF_TEX ? LLMPERF_TEX[name] : ""));
  s = s.replace(/\\[,;:! ]/g, " ").replace(/\\\\/g, " ").replace(/&/g, " ");
  s = s.replace(/([_^])\{([^{}]*)\}/g, "$1$2").replace(/[{}]/g, "");
  return s.replace(/\s+/g, " ").trim();
}

function llmperfHtmlToText(htmlString, anchor) {
  const doc = new DOMParser().parseFromString(htmlString, "text/html");
  const dropped = [".headerlink", "script", "style", ".bd-header-article", ".header-article-items",
                   ".prev-next-area", ".bd-sidebar-secondary", ".bd-footer-article",
                   ".bd-footer-content", "nav", "button", ".dropdown-menu", ".toggle-hidden"];
  for (const selector of dropped) {
    doc.querySelectorAll(selector).forEach((el) => el.remove());
  }
  doc.querySelectorAll(".math").forEach((el) => {
    el.replaceWith(doc.createTextNode(" " + llmperfTexToText(el.textContent) + " "));
  });
  const main = doc.querySelector("article") || doc.querySelector('[role="main"]');
  if (!main) return "";
  let block = main;
  if (anchor) {
    try {
      block = main.querySelector(anchor) || main;
    } catch (e) {
      block = main;
    }
  }
  let text = block.textContent;
  if (block.tagName === "DT") {  // a glossary term: its definition too
    let next = block.nextElementSibling;
    while (next && next.tagName === "DT") next = next.nextElementSibling;
    if (next) text += ": " + next.textContent;
  }
  return text.replace(/\s+/g, " ").replace(/ ([,.;:)\]])/g, "$1")
    .replace(/([(\[]) /g, "$1").trim();
}

document.addEventListener("DOMContentLoaded", () => {
  // searchtools.js has run by now (it is loaded below this file); Search.init has not.
  if (typeof Search !== "undefined") Search.htmlToText = llmperfHtmlToText;
});
