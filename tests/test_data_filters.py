"""Each AdvTest filter removes what it should: case tables over tests/data/filter_cases/."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.data import text
from trainers.data.extract import mine_file
from trainers.data.filters import ACROSS_SPLIT_FILTERS, FILTERS, Deduplicator, is_english, query_filter

CASES_DIR = Path(__file__).parent / "data" / "filter_cases"

# func_name in the fixture -> the filter that removes it (None: kept)
EXPECTED = {
    ("cases.py", "helper"): "query_too_short",
    ("cases.py", "describe_fox"): "query_too_long",
    ("cases.py", "fetch_page"): "query_has_url",
    ("cases.py", "bold"): "query_has_markup",
    ("cases.py", "next_node"): "query_has_special_tokens",
    ("cases.py", "shout"): None,  # its doctest is after the first paragraph
    ("cases.py", "whisper"): "query_has_special_tokens",
    ("cases.py", "clamp"): "query_is_section_header",
    ("cases.py", "summa"): "query_not_english",
    ("cases.py", "reserved"): "empty_body",
    ("cases.py", "placeholder"): "empty_body",
    ("cases.py", "area"): None,
    ("cases.py", "Other.area"): "exact_duplicate",
    ("cases.py", "area_again"): "duplicate_query",
    ("cases.py", "rect_area"): "near_duplicate_code",
    ("cases.py", "Marker.get_color"): None,
    ("cases.py", "Marker.get_size"): None,
    ("cases.py", "Marker.get_opacity"): None,
    ("cases.py", "Marker.get_symbol"): "over_template_cap",
    ("legacy.py", "greet"): "code_does_not_parse",  # Python 2: `print "hello", name`
    ("legacy.py", "farewell"): None,  # the rest of an unparsable file is still mined
}


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str], str | None]:
    found = {}
    for name in ("cases.py", "legacy.py"):
        result = mine_file(CASES_DIR / name, repo="filter_cases", path=name)
        found |= {(name, func): reason for func, reason in result.rejected}
        dedup = Deduplicator()
        found |= {(name, pair.func_name): dedup.offer(pair) for pair in result.pairs}
    return found


@pytest.mark.parametrize(("case", "reason"), list(EXPECTED.items()), ids=[f"{f}:{n}" for f, n in EXPECTED])
def test_filter_removes_what_it_should(outcomes, case, reason):
    assert outcomes[case] == reason


def test_every_filter_has_a_case(outcomes):
    # the filters across splits run after the split: their cases are in test_data_neardup.py
    assert set(EXPECTED.values()) - {None} == set(FILTERS) - set(ACROSS_SPLIT_FILTERS)
    assert set(outcomes) == set(EXPECTED)


def test_unparsable_file_is_flagged():
    assert not mine_file(CASES_DIR / "legacy.py", repo="r", path="legacy.py").parsed
    assert mine_file(CASES_DIR / "cases.py", repo="r", path="cases.py").parsed


QUERIES = [
    # first paragraphs of real docstrings (stdlib, numpy, sympy, transformers) -> rule
    ("Return the index where to insert item x in list a, assuming a is sorted.", None),
    ("Test whether FILENAME matches PATTERN.", None),
    ("Parse a URL into 5 components: <scheme>://<netloc>/<path>?<query>#<fragment>", "query_has_markup"),
    ("Tunes out the hidden states for padding tokens, see https://github.com/org/repo/issues/66", "query_has_url"),
    ("Visit www.python.org for details.", "query_has_url"),
    ("Adjugate of a square :class:`DomainMatrix`.", "query_has_special_tokens"),
    ("Instantiate a [`PreTrainedConfig`] from a pretrained model configuration.", "query_has_special_tokens"),
    ("Returns True if `x^n = a \\pmod{p^k}` has solutions.", "query_has_special_tokens"),
    ("Compute the norm $\\|x\\|_2$ of a vector.", "query_has_special_tokens"),
    (".. deprecated:: 1.2 Use something else.", "query_has_special_tokens"),
    ("Parameters ---------- x : array", "query_has_special_tokens"),
    ("Args: hidden_states (`torch.Tensor`): input to the layer", "query_is_section_header"),
    ("pixel_values (`torch.Tensor` of shape `(batch, channels)`): The images.", "query_is_section_header"),
    ("x (int): the value to clamp", "query_is_section_header"),
    ("Returns the number of free sectors in the cache pool.", None),
    ("Example", "query_too_short"),
    ("计算两个数的和。", "query_too_short"),  # one token: no spaces or ASCII punctuation between words
    ("计算 两个 数的 和", "query_not_english"),
    ("=== --- ===", "query_not_english"),
    ("Return a < b and c > d for the two pairs.", None),
]


@pytest.mark.parametrize(("query", "reason"), QUERIES)
def test_query_rules(query, reason):
    assert query_filter(query, text.docstring_tokens(query)) == reason


@pytest.mark.parametrize(("query", "english"), [
    # German passes: the heuristic only catches non-Latin scripts (documented in filters.py)
    ("Return the sum.", True), ("Lies die Datei und gib ihren Inhalt zurück.", True), ("Вернуть сумму.", False), ("42 + 1", False),
])
def test_is_english(query, english):
    assert is_english(query) is english


@pytest.mark.parametrize(("docstring", "query", "tokens"), [
    ("Return x.\n\n    More text.", "Return x.", ["Return", "x", "."]),
    ("\n    Split on   commas,\n    keeping order.\n\n    Details.", "Split on commas, keeping order.",
     ["Split", "on", "commas", ",", "keeping", "order", "."]),
    ("Call f(x) -> y.", "Call f(x) -> y.", ["Call", "f", "(", "x", ")", "->", "y", "."]),
])
def test_query_is_first_paragraph(docstring, query, tokens):
    assert text.first_paragraph(docstring) == query
    assert text.docstring_tokens(query) == tokens


def test_code_tokens_drop_layout_and_comments():
    code = "def f(x):  # note\n    return 'a b' + x\n"
    assert text.code_tokens(code) == ["def", "f", "(", "x", ")", ":", "return", "'a b'", "+", "x"]
    assert text.template_key(text.code_tokens(code))[-3:] == ("STR", "+", "x")
