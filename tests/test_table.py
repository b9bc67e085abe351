"""The table helper: aligned text for terminals and saved outputs, HTML for notebooks."""

import llmperf as lp


def test_text_is_aligned_with_numbers_on_the_right():
    table = lp.Table(
        ["model", "weights", "layers"],
        [("llama-2-7b", 13.48e9, 32), ("gpt2", 0.25e9, 12)],
        title="Weights in fp16",
        formats={"weights": lp.format_bytes},
    )
    assert str(table) == "\n".join(
        [
            "Weights in fp16",
            "model         weights  layers",
            "----------  ---------  ------",
            "llama-2-7b   13.48 GB      32",
            "gpt2        250.00 MB      12",
        ]
    )


def test_default_cells_and_footer():
    table = lp.Table(["op", "n", "x"], [("a", 1234567, 0.000123456)], footer=[("total", None, 2.0)])
    lines = str(table).splitlines()
    assert lines[2].split() == ["a", "1,234,567", "0.0001235"]
    assert lines[3].startswith("--") and lines[4].split() == ["total", "2"]
    assert repr(table) == str(table)


def test_format_specs_and_functions():
    table = lp.Table(["x", "t"], [(62.4, 0.02205)], formats={"x": ".1f", "t": lp.format_seconds})
    assert str(table).splitlines()[-1].split() == ["62.4", "22.05", "ms"]


def test_html_escapes_and_aligns():
    table = lp.Table(["name", "value"], [("<b>", 3)], title="a & b", footer=[("sum", 3)])
    html = table._repr_html_()
    assert "<caption>a &amp; b</caption>" in html
    assert "&lt;b&gt;" in html and "<b>" not in html.replace("<caption>", "")
    assert '<td style="text-align:right">3</td>' in html
    assert "<tfoot>" in html and html.count("<tr>") == 3
