"""Mining one Python file: every function with a docstring becomes a candidate query/code pair.

Functions and methods count wherever they are: async, nested in other functions, in classes,
decorated. What a pair holds:

- `original_string`: the function's source text from `def` to its last line, shifted left by
  the indentation of its `def`. Decorators are not part of it, as in CodeSearchNet, whose
  parser cuts functions the same way.
- `code`: `ast.unparse` of the function without its docstring statement and without
  decorators. Comments and layout are gone, so train, valid and test code all look alike.
  `normalized_code` is the same with names hidden (see `normalize.py`); valid and test use it.
- `docstring`: the whole docstring, cleaned (`inspect.cleandoc`). The query is its first
  paragraph, kept as `docstring_tokens` (see `text.py`).

The per-pair filters in `filters.py` run here; the duplicate filters need all files and run in
the build.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import tokenize
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainers.data import filters, text
from trainers.data.normalize import FunctionNode, normalize_function


@dataclass(frozen=True, slots=True)
class Pair:
    """One query/code pair as mined, before the duplicate filters and the split."""

    repo: str
    path: str
    func_name: str
    start: int  # first line of the `def`, 1-based
    end: int
    original_string: str
    docstring: str
    docstring_tokens: tuple[str, ...]
    code: str
    code_tokens: tuple[str, ...]
    normalized_code: str
    normalized_tokens: tuple[str, ...]
    query_key: str
    code_key: str  # hash of the normalised code tokens
    template_key: str  # hash of the normalised code tokens with string literals masked

    @property
    def url(self) -> str:
        return f"{self.repo}/{self.path}#L{self.start}-L{self.end}"

    def record(self, *, idx: int, normalized: bool) -> dict:
        """The CodeXGLUE AdvTest line for this pair, fields in CodeSearchNet's order."""
        return {
            "repo": self.repo,
            "path": self.path,
            "func_name": self.func_name,
            "original_string": self.original_string,
            "language": "python",
            "code": self.normalized_code if normalized else self.code,
            "code_tokens": list(self.normalized_tokens if normalized else self.code_tokens),
            "docstring": self.docstring,
            "docstring_tokens": list(self.docstring_tokens),
            "url": self.url,
            "idx": idx,
        }


@dataclass
class FileResult:
    """What one file gave: its kept pairs, and how many each filter removed."""

    pairs: list[Pair] = field(default_factory=list)
    removed: Counter = field(default_factory=Counter)
    functions: int = 0  # functions with a docstring
    parsed: bool = True


def mine_file(file: Path, *, repo: str, path: str) -> FileResult:
    """All pairs in `file`; `repo` and `path` name it in the output. A file that cannot be read or
    parsed gives an empty result with `parsed=False`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code
            data = file.read_bytes()
            source = data.decode(tokenize.detect_encoding(io.BytesIO(data).readline)[0]).replace("\r\n", "\n")
            tree = ast.parse(source, filename=str(file))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError, LookupError, RecursionError, MemoryError):
        return FileResult(parsed=False)
    result = FileResult()
    lines = source.splitlines(keepends=True)
    for node, qualname, module_level in _functions(tree):
        docstring = ast.get_docstring(node, clean=True)
        if not docstring:
            continue
        result.functions += 1
        try:
            pair, reason = _pair(node, lines, repo=repo, path=path, qualname=qualname, docstring=docstring, module_level=module_level)
        except RecursionError:  # absurdly deep expressions
            pair, reason = None, "code_does_not_parse"
        if pair is None:
            result.removed[reason] += 1
        else:
            result.pairs.append(pair)
    return result


def _functions(tree: ast.Module):
    """(node, qualified name, defined at module level) for every function, in source order."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    found = []
    while stack:
        parent, prefix = stack.pop()
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((child, name, parent is tree))
                stack.append((child, f"{name}."))
            else:
                stack.append((child, prefix))
    found.sort(key=lambda item: (item[0].lineno, item[0].col_offset))
    return found


def _pair(node: FunctionNode, lines: list[str], *, repo: str, path: str, qualname: str, docstring: str, module_level: bool) -> tuple[Pair | None, str]:
    original = _source_text(node, lines)
    try:
        ast.parse(original)
    except SyntaxError:
        return None, "code_does_not_parse"
    bare = copy.copy(node)
    bare.decorator_list = []
    bare.body = node.body[1:]
    if all(_is_placeholder(statement) for statement in bare.body):
        return None, "empty_body"
    query = text.first_paragraph(docstring)
    query_tokens = text.docstring_tokens(query)
    reason = filters.query_filter(query, query_tokens)
    if reason is not None:
        return None, reason
    code = ast.unparse(bare)
    normalized = ast.unparse(normalize_function(bare, module_level=module_level))
    try:
        tokens, normalized_tokens = text.code_tokens(code), text.code_tokens(normalized)
    except (tokenize.TokenError, SyntaxError):
        return None, "code_does_not_parse"
    return Pair(
        repo=repo, path=path, func_name=qualname, start=node.lineno, end=node.end_lineno or node.lineno,
        original_string=original, docstring=docstring, docstring_tokens=tuple(query_tokens),
        code=code, code_tokens=tuple(tokens), normalized_code=normalized, normalized_tokens=tuple(normalized_tokens),
        query_key=filters.query_key(query_tokens), code_key=_digest(normalized_tokens),
        template_key=_digest(text.template_key(normalized_tokens)),
    ), ""


def _digest(tokens) -> str:
    return hashlib.sha1("\x00".join(tokens).encode()).hexdigest()


def _is_placeholder(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and statement.value.value is Ellipsis


def _source_text(node: FunctionNode, lines: list[str]) -> str:
    """The function's lines from `def` on, shifted left by the `def`'s indentation where a line has it."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    head = lines[first]
    indent = head[: len(head) - len(head.lstrip(" \t"))]
    body = lines[first : last + 1]
    shifted = [line[len(indent):] if line.startswith(indent) else line for line in body]
    return "".join(shifted).rstrip("\n") if len(shifted) > 1 else shifted[0].rstrip("\n")
