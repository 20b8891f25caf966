"""Turning a docstring into a query and code into tokens, the way CodeSearchNet does.

- The query is the docstring's first paragraph: `inspect.cleandoc`, cut at the first blank line,
  whitespace collapsed to single spaces.
- `docstring_tokens` split the query into runs of word characters (letters, digits, `_`) and
  runs of other non-space characters: `"Return x.y()."` -> `Return x . y ().`. This is close to
  CodeSearchNet's regex tokenizer; the model sees the tokens joined by spaces.
- `code_tokens` are Python's own `tokenize` tokens with comments, newlines, indents and dedents
  dropped; a string literal is one token.
"""

from __future__ import annotations

import inspect
import io
import keyword
import re
import tokenize

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_WHITESPACE = re.compile(r"\s+")
_DOC_TOKEN = re.compile(r"\w+|[^\w\s]+")
_DIGITS = re.compile(r"\d+")
_LAYOUT = frozenset({
    tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
    tokenize.ENDMARKER, tokenize.ENCODING,
})


def first_paragraph(docstring: str) -> str:
    """The summary a query is made of: the first paragraph, on one line."""
    cleaned = inspect.cleandoc(docstring)
    return _WHITESPACE.sub(" ", _BLANK_LINE.split(cleaned, maxsplit=1)[0]).strip()


def docstring_tokens(text: str) -> list[str]:
    """Word runs and punctuation runs: `"Split x, y."` -> `['Split', 'x', ',', 'y', '.']`."""
    return _DOC_TOKEN.findall(text)


def code_tokens(code: str) -> list[str]:
    """Python tokens without layout or comments; raises `tokenize.TokenError` or `SyntaxError` on broken code."""
    return [token.string for token in tokenize.generate_tokens(io.StringIO(code).readline) if token.type not in _LAYOUT]


def template_key(tokens: list[str]) -> tuple[str, ...]:
    """Code tokens with every string literal replaced by `STR` and every run of digits by `0`: code that
    differs only in its strings or numbers (a generated property returning `self["color"]` or
    `self["size"]`, generated `handler_17` ... `handler_59020` adding 17 ... 59020) gets one key."""
    return tuple("STR" if _is_string(token) else _DIGITS.sub("0", token) for token in tokens)


def shape_key(tokens: list[str]) -> tuple[str, ...]:
    """`template_key` with every name masked too (keywords kept): the shape of the code. Functions of one
    shape differ only in the names they use (`return self._color`, `return self._size`)."""
    return tuple("STR" if _is_string(token) else "ID" if token.isidentifier() and not keyword.iskeyword(token)
                 else _DIGITS.sub("0", token) for token in tokens)


def _is_string(token: str) -> bool:
    head = token[:4].lower().lstrip("rbuf")
    return head[:1] in {"'", '"'}
