"""AdvTest's filters, each with a name, a rule and a count in the manifest.

CodeXGLUE removed examples whose code does not parse, whose query has fewer than 3 or more than
256 tokens, whose query holds special tokens (`<img ...>`, `https:...`) or is not English. Here
each rule is explicit, and a pair is counted under the first rule that removes it, in the order
of `FILTERS`:

- `code_does_not_parse`: the function's own source text, cut out of its file and shifted left,
  does not parse on its own.
- `empty_body`: without the docstring nothing is left but `pass` or `...` (stubs, abstract
  methods): there is no code to find.
- `query_too_short` / `query_too_long`: fewer than 3 or more than 256 `docstring_tokens`.
- `query_has_url`: `http://`, `https://`, `ftp://`, `file://` or `www.`.
- `query_has_markup`: an HTML or XML tag (`<img ...>`, `</b>`, `<br/>`).
- `query_has_special_tokens`: markup that is not prose: a doctest prompt `>>>`, a Sphinx role
  (:func:`x`), a reST directive (`.. note::`) or link (`name`_), a doc-builder link ([`Name`]),
  LaTeX (`$x$`, `\\frac{`), a code fence, or a heading underline (`-----`).
- `query_is_section_header`: the first paragraph is a section such as `Args:` or `Returns:`,
  or a parameter entry (`x (int): ...`, ``input_ids (`torch.LongTensor`): ...``), not a summary.
- `query_not_english`: no letters at all, or fewer than 90% of its letters are ASCII. A cheap
  heuristic: it catches Chinese, Japanese, Cyrillic and Greek text, not German or French. A
  query holding a lone surrogate (`\ud800` written as an escape in the docstring) is not text
  either: tokenizers refuse it.
- `exact_duplicate`: the same query and the same code as a pair kept earlier.
- `duplicate_query`: the same query (lower-cased words, punctuation ignored) as a pair kept
  earlier; a query must point at one function, and generated code repeats its docstrings.
- `near_duplicate_code`: the same code as a pair kept earlier once names are normalised as in
  AdvTest (`Func`, `arg_i`): copies that differ only in local names keep one representative.
- `over_template_cap`: `MAX_PER_TEMPLATE` pairs were already kept whose code is this one's once
  string literals and digits are masked too: template-generated functions (plotly's thousands
  of properties returning `self["color"]`, `self["size"]`, ...; a generated file's `handler_1`
  ... `handler_59020` adding 1 ... 59020) keep a few representatives, while a small family such
  as `Decimal.is_qnan` / `is_snan` / `is_infinite` stays whole. Within one file, a function also
  counts against this cap when `MAX_SAME_SHAPE_PER_FILE` pairs of that file were already kept
  whose code has its shape (names masked as well): a generated file whose functions differ only
  in the names they use keeps that many, while a hand-written module's families of delegating
  methods stay whole (the largest in the standard library and numpy: 17 `Context` methods of one
  shape in `_pydecimal.py`, 13 `inspect.is...` predicates).
- `near_duplicate_of_train_code` / `near_duplicate_of_train_query`: after the split, a valid or
  test pair whose code has a token 5-gram Jaccard >= 0.7 with a train code, or whose query has a
  word Jaccard >= 0.8 with a train query (`neardup.py`, which holds the thresholds).

"Earlier" is the build's fixed order: sources as listed, files sorted by path, functions by line.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainers.data.pair import Pair

MIN_QUERY_TOKENS = 3
MAX_QUERY_TOKENS = 256
MIN_ASCII_LETTER_SHARE = 0.9
MAX_PER_TEMPLATE = 3
MAX_SAME_SHAPE_PER_FILE = 20  # above the largest hand-written family in the standard library and numpy (17)

FILTERS = (
    "code_does_not_parse",
    "empty_body",
    "query_too_short",
    "query_too_long",
    "query_has_url",
    "query_has_markup",
    "query_has_special_tokens",
    "query_is_section_header",
    "query_not_english",
    "exact_duplicate",
    "duplicate_query",
    "near_duplicate_code",
    "over_template_cap",
    "near_duplicate_of_train_code",
    "near_duplicate_of_train_query",
)
ACROSS_SPLIT_FILTERS = FILTERS[-2:]  # applied after the split, by `neardup.py`

SURROGATE = re.compile("[\ud800-\udfff]")  # not Unicode text: no UTF-8 encoding, no tokenizer takes it
_URL = re.compile(r"(?i)\b(?:https?|ftp|file)://|\bwww\.\w")
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>|<!--")
_SPECIAL = re.compile(
    r">>>"  # doctest prompt
    r"|(?<![\w`]):[\w-]+(?::[\w-]+)*:`"  # Sphinx role  :func:`x`  :py:meth:`x`
    r"|\.\. [\w-]+::"  # reST directive
    r"|`[^`]+`__?(?!\w)"  # reST hyperlink reference
    r"|\[`[^`\]]+`\]"  # doc-builder link  [`PreTrainedModel`]
    r"|\$[^$\s][^$]*\$"  # inline LaTeX
    r"|\\[A-Za-z]+\{"  # LaTeX command with an argument
    r"|```"  # code fence
    r"|(?:^|\s)[-=~^*#]{4,}(?:\s|$)"  # heading underline
)
_SECTION = re.compile(
    r"(?i)^(?:args|arguments|parameters|params|keyword arguments|kwargs|returns?|yields?|raises|"
    r"examples?|notes?|attributes|inputs|outputs|see also|warnings?|todo)\s*:"
    r"|^\w+ \(`"  # a parameter entry, transformers style:  input_ids (`torch.LongTensor` ...):
    r"|^\w+ \([\w.,\[\] ]*\):\s"  # a parameter entry, Google style:  x (int): ...
)


def query_filter(query: str, tokens: list[str]) -> str | None:
    """The name of the first query rule that removes this pair, or None to keep it."""
    if len(tokens) < MIN_QUERY_TOKENS:
        return "query_too_short"
    if len(tokens) > MAX_QUERY_TOKENS:
        return "query_too_long"
    if _URL.search(query):
        return "query_has_url"
    if _TAG.search(query):
        return "query_has_markup"
    if _SPECIAL.search(query):
        return "query_has_special_tokens"
    if _SECTION.match(query):
        return "query_is_section_header"
    if not is_english(query):
        return "query_not_english"
    return None


def is_english(text: str) -> bool:
    """Text (no lone surrogates), at least one letter, and at least 90% of the letters ASCII."""
    if SURROGATE.search(text):
        return False
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    return sum(c.isascii() for c in letters) / len(letters) >= MIN_ASCII_LETTER_SHARE


def query_key(tokens: list[str]) -> str:
    """What two queries must share to count as the same: their words, lower-cased."""
    return " ".join(token.lower() for token in tokens if any(c.isalnum() for c in token))


class Deduplicator:
    """The duplicate filters: offer pairs in the build's order; the first of each kind is kept."""

    def __init__(self) -> None:
        self._exact: set[tuple[str, bytes]] = set()
        self._queries: set[str] = set()
        self._codes: set[str] = set()
        self._templates: Counter[str] = Counter()
        self._file: tuple[str, str] | None = None
        self._shapes: Counter[str] = Counter()  # within self._file

    def offer(self, pair: Pair) -> str | None:
        """None if `pair` is kept (and remembered), else the name of the filter that removes it."""
        if self._file != (pair.repo, pair.path):  # files arrive one after the other
            self._file, self._shapes = (pair.repo, pair.path), Counter()
        exact = (pair.query_key, hashlib.sha1(pair.code.encode()).digest())
        if exact in self._exact:
            return "exact_duplicate"
        if pair.query_key in self._queries:
            return "duplicate_query"
        if pair.code_key in self._codes:
            return "near_duplicate_code"
        if self._templates[pair.template_key] >= MAX_PER_TEMPLATE or self._shapes[pair.shape_key] >= MAX_SAME_SHAPE_PER_FILE:
            return "over_template_cap"
        self._exact.add(exact)
        self._queries.add(pair.query_key)
        self._codes.add(pair.code_key)
        self._templates[pair.template_key] += 1
        self._shapes[pair.shape_key] += 1
        return None
