"""Mining one Python file: every function with a docstring becomes a candidate query/code pair.

Functions and methods count wherever they are: async, nested in other functions, in classes,
decorated. What a pair holds:

- `original_string`: the function's source text from `def` to its last line, cut the way
  CodeSearchNet cuts it: decorators are not part of it, and only the first line loses its
  indentation (a block may be indented by any amount, so the text still parses, and string
  literals keep their exact contents).
- `code`: `ast.unparse` of the function without its docstring statement and without
  decorators. Comments and layout are gone, so train, valid and test code all look alike.
  `normalized_code` is the same with names hidden (see `normalize.py`); valid and test use it.
- `docstring`: the whole docstring, cleaned (`inspect.cleandoc`). The query is its first
  paragraph, kept as `docstring_tokens` (see `text.py`).

A file that does not parse as a whole (Python 2 code, a syntax error somewhere) is mined
function by function, the way CodeSearchNet's error-tolerant parser saw such files: each `def`
line starts a block of the lines indented under it; a block that parses is mined (a method's
`func_name` is then its bare name), and a block that does not is counted under
`code_does_not_parse` if its first line after the `def` line opens a string (a docstring).

Only regular files of at most `MAX_FILE_BYTES` are read (opened without blocking, so a FIFO
named `x.py` is skipped, not waited on); a file that is not one, or cannot be read, gives no
pairs and the reason it was skipped.

A pair is a `Pair` (`pair.py`). The per-pair filters in `filters.py` run here; the duplicate
filters need all files and run in the build.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import re
import stat
import tokenize
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainers.data import filters, text
from trainers.data.normalize import FunctionNode, normalize_function
from trainers.data.pair import Pair

_DEF_LINE = re.compile(r"([ \t]*)(?:async[ \t]+)?def[ \t]+(\w+)")
_OPENS_STRING = re.compile(r"[ \t]*[rRbBuUfF]{0,2}['\"]")
MAX_FILE_BYTES = 2 * 1024 * 1024  # the largest file in the default sources (pydoc_data/topics.py) has 0.76 MB


@dataclass
class FileResult:
    """What one file gave: the pairs that passed the per-pair filters, and the ones that did not."""

    pairs: list[Pair] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (func_name, filter name)
    functions: int = 0  # functions with a docstring
    parsed: bool = True  # the file parsed as a whole
    skipped: str | None = None  # why the file was not read: "not_a_regular_file", "over_size_cap", "unreadable"

    @property
    def removed(self) -> Counter:
        return Counter(reason for _, reason in self.rejected)


def mine_file(file: Path, *, repo: str, path: str) -> FileResult:
    """All pairs in `file`; `repo` and `path` name it in the output. A file that is skipped (see
    `read_source`) or cannot be decoded gives an empty result; one that does not parse is mined
    block by block."""
    data = read_source(file)
    if isinstance(data, str):
        return FileResult(parsed=False, skipped=data)
    try:
        source = data.decode(tokenize.detect_encoding(io.BytesIO(data).readline)[0])
    except (UnicodeDecodeError, SyntaxError, LookupError):
        return FileResult(parsed=False)
    source = source.replace("\r\n", "\n").replace("\r", "\n")  # line numbers as the parser counts them
    lines = source.split("\n")
    result = FileResult()
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        result.parsed = False
        _mine_blocks(lines, result, repo=repo, path=path)
    else:
        _mine_tree(tree, lines, result, repo=repo, path=path, module_level=True)
    return result


def read_source(file: Path, limit: int = MAX_FILE_BYTES) -> bytes | str:
    """The bytes of `file`, or why it is skipped: "not_a_regular_file" (a FIFO, a device, a directory;
    opened without blocking and never read), "over_size_cap" (more than `limit` bytes), "unreadable"."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return "unreadable"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not_a_regular_file"
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # a file that grows while it is read still stops here
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
    return "over_size_cap" if len(data) > limit else data


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old code
        return ast.parse(source)


def _mine_tree(tree: ast.Module, lines: list[str], result: FileResult, *, repo: str, path: str, module_level: bool) -> None:
    for node, qualname, top in _functions(tree):
        docstring = ast.get_docstring(node, clean=True)
        if not docstring:
            continue
        result.functions += 1
        try:
            pair, reason = _pair(node, lines, repo=repo, path=path, qualname=qualname, docstring=docstring,
                                 module_level=top and module_level)
        except RecursionError:  # absurdly deep expressions
            pair, reason = None, "code_does_not_parse"
        if pair is None:
            result.rejected.append((qualname, reason))
        else:
            result.pairs.append(pair)


def _mine_blocks(lines: list[str], result: FileResult, *, repo: str, path: str) -> None:
    """Mine a file that does not parse: each `def` block on its own."""
    number = 0
    while number < len(lines):
        match = _DEF_LINE.match(lines[number])
        if match is None:
            number += 1
            continue
        indent, end = match.group(1), number + 1
        while end < len(lines) and (not lines[end].strip() or _width(lines[end]) > len(indent)):
            end += 1
        block = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[number:end])
        try:
            tree = _parse(block)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            body = [line for line in lines[number + 1:end] if line.strip()]
            if body and _OPENS_STRING.match(body[0]):
                result.functions += 1
                result.rejected.append((match.group(2), "code_does_not_parse"))
            number += 1  # nested blocks may still parse
            continue
        ast.increment_lineno(tree, number)
        _mine_tree(tree, lines, result, repo=repo, path=path, module_level=not indent)
        number = end


def _width(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _functions(tree: ast.Module) -> list[tuple[FunctionNode, str, bool]]:
    """(node, qualified name, defined at the top of `tree`) for every function, in source order.

    Only statements are visited (a `def` is never inside an expression); a function under an
    `if`, `try` or `with` at the top of the module is still at the top."""
    found: list[tuple[FunctionNode, str, bool]] = []

    def walk(statements: list, prefix: str, top: bool) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node, f"{prefix}{node.name}", top))
                walk(node.body, f"{prefix}{node.name}.", False)
            elif isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}.", False)
            else:
                for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, name, None)
                    if isinstance(children, list):
                        walk(children, prefix, top)

    walk(tree.body, "", True)
    found.sort(key=lambda item: (item[0].lineno, item[0].col_offset))
    return found


def _pair(node: FunctionNode, lines: list[str], *, repo: str, path: str, qualname: str, docstring: str,
          module_level: bool) -> tuple[Pair | None, str]:
    original = _source_text(node, lines)
    try:
        own = _parse(original).body[0]  # the function on its own, and a fresh tree to rewrite
    except (SyntaxError, ValueError):
        return None, "code_does_not_parse"
    own.body = own.body[1:]  # the docstring statement
    if all(_is_placeholder(statement) for statement in own.body):
        return None, "empty_body"
    query = text.first_paragraph(docstring)
    query_tokens = text.docstring_tokens(query)
    reason = filters.query_filter(query, query_tokens)
    if reason is not None:
        return None, reason
    code = ast.unparse(own)
    normalized = ast.unparse(normalize_function(own, module_level=module_level, in_place=True))
    try:
        tokens, normalized_tokens = text.code_tokens(code), text.code_tokens(normalized)
    except (tokenize.TokenError, SyntaxError):
        return None, "code_does_not_parse"
    return Pair(
        repo=repo, path=path, func_name=qualname, start=node.lineno, end=node.end_lineno or node.lineno,
        original_string=original, docstring=docstring, docstring_tokens=tuple(query_tokens),
        code=code, code_tokens=tuple(tokens), normalized_code=normalized, normalized_tokens=tuple(normalized_tokens),
        query_key=filters.query_key(query_tokens), code_key=_digest(normalized_tokens),
        template_key=_digest(text.template_key(normalized_tokens)), shape_key=_digest(text.shape_key(normalized_tokens)),
    ), ""


def _digest(tokens: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha1("\x00".join(tokens).encode()).hexdigest()


def _is_placeholder(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and statement.value.value is Ellipsis


def _source_text(node: FunctionNode, lines: list[str]) -> str:
    """The function's text from `def` (or `async`) to its last line, as CodeSearchNet cuts it:
    only the first line loses its indentation, so string literals keep their exact contents."""
    body = lines[node.lineno - 1 : node.end_lineno or node.lineno]
    return "\n".join([body[0].lstrip(" \t\f"), *body[1:]])
