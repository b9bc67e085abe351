"""Bibliography labels that are the same in every chapter, and tell works apart.

- The "unique_alpha" style. Each chapter lists only the sources it cites (a filtered
  {bibliography}). pybtex's alpha labels add "a", "b" only among the entries of one list, so two
  NVIDIA documents of 2021 are "NVIDIA21" in two chapters that cite one each, and Sphinx warns
  of a duplicate label. This style assigns the letters once, over every entry of the book's
  .bib files (ordered by key), so a source carries one label everywhere and no two sources
  share one. Titles keep the capitals of the .bib file ("Llama 2: Open Foundation ...",
  "FlashAttention"); pybtex's default lower-cases every title but the first letter.
- The "author_year_unique" reference style: author_year, with the same letter after the year
  where the label has one, so that the text of a citation tells the two works apart too:
  "[NVIDIA, 2021a]" and "[NVIDIA, 2021b]" for [NVIDIA21a] and [NVIDIA21b].
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pybtex.database import parse_file
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabels
from pybtex.style.template import field, first_of, join, node, optional, sentence
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.plugin import register_plugin as register_bibtex_plugin
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.referencing.extra_author import ExtraAuthorReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_empty import ExtraEmptyReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_label import ExtraLabelReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_year import ExtraYearReferenceStyle
from sphinxcontrib.bibtex.style.template import join2, post_text, pre_text, reference

_BIB_FILES: list[Path] = []


@cache
def _labels_and_letters() -> tuple[dict[str, str], dict[str, str]]:
    """Key -> label, and key -> the letter that label got, over every entry of the .bib files."""
    entries = {}
    for path in _BIB_FILES:
        entries.update(parse_file(str(path)).entries)
    keys = sorted(entries)
    base = {key: AlphaLabels().format_label(entries[key]) for key in keys}
    count, seen, labels, letters = Counter(base.values()), Counter(), {}, {}
    for key in keys:
        label = base[key]
        if count[label] > 1:
            letters[key] = chr(ord("a") + seen[label])
            labels[key] = label + letters[key]
            seen[label] += 1
        else:
            labels[key] = label
    return labels, letters


class UniqueAlphaLabels(AlphaLabels):
    def format_labels(self, sorted_entries):
        labels = _labels_and_letters()[0]
        for entry in sorted_entries:
            yield labels.get(entry.key) or self.format_label(entry)


class UniqueAlphaStyle(AlphaStyle):
    default_label_style = "unique_alpha"

    def format_title(self, e, which_field, as_sentence=True):
        title = field(which_field)  # as the .bib writes it: no change of case
        return sentence[title] if as_sentence else title


# --- citations in the text ------------------------------------------------------------------------

@node
def unique_year(children, data):
    """The year, with the letter of the entry's label when it has one: 2021a."""
    assert not children
    year = first_of[optional[field("year")], "n.d."].format_data(data)
    letter = _labels_and_letters()[1].get(data["entry"].key, "")
    return Text(year, letter) if letter else year


@dataclass
class _Parenthetical(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
            pre_text,
            reference[join(sep=self.author_year_sep)[
                self.person.author_or_editor_or_title(full="s" in role_name), unique_year]],
            post_text,
        ]


@dataclass
class _Textual(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[self.bracket.left,
                 join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
                     pre_text, reference[unique_year], post_text],
                 self.bracket.right],
        ]


@dataclass
class _Year(ExtraYearReferenceStyle):
    def inner(self, role_name):
        return reference[unique_year]


@dataclass
class AuthorYearUniqueReferenceStyle(AuthorYearReferenceStyle):
    """author_year, whose years carry the label's letter."""

    def __post_init__(self):
        self.styles.extend([
            _Parenthetical(bracket=self.bracket_parenthetical, person=self.person,
                           author_year_sep=self.author_year_sep, pre_text_sep=self.pre_text_sep,
                           post_text_sep=self.post_text_sep),
            _Textual(bracket=self.bracket_textual, person=self.person,
                     text_reference_sep=self.text_reference_sep,
                     pre_text_sep=self.pre_text_sep, post_text_sep=self.post_text_sep),
            ExtraAuthorReferenceStyle(bracket=self.bracket_author, person=self.person),
            ExtraLabelReferenceStyle(bracket=self.bracket_label),
            _Year(bracket=self.bracket_year),
            ExtraEmptyReferenceStyle(),
        ])
        # GroupReferenceStyle's own set-up (role names); AuthorYearReferenceStyle's would add
        # the plain author_year styles a second time.
        super(AuthorYearReferenceStyle, self).__post_init__()


def _remember_bib_files(app: Sphinx, config) -> None:
    _BIB_FILES[:] = [Path(app.srcdir) / name for name in config.bibtex_bibfiles]
    _labels_and_letters.cache_clear()


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.labels", "unique_alpha", UniqueAlphaLabels)
    register_plugin("pybtex.style.formatting", "unique_alpha", UniqueAlphaStyle)
    register_bibtex_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_unique",
                           AuthorYearUniqueReferenceStyle)
    app.connect("config-inited", _remember_bib_files)
    return {"parallel_read_safe": True}
