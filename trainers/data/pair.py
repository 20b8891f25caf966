"""A mined query/code pair: what `extract.py` produces and the filters in `filters.py` judge.

It lives apart from the miner so that the filters can name it without importing the miner,
which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainers.data.schema import Example


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
    template_key: str  # hash of the normalised code tokens with string literals and digits masked
    shape_key: str  # hash of the same with names masked too

    @property
    def url(self) -> str:
        return f"{self.repo}/{self.path}#L{self.start}-L{self.end}"

    def to_example(self, *, idx: int, normalized: bool) -> Example:
        """The AdvTest example: valid and test carry the normalised code."""
        return Example(
            idx=idx, url=self.url, docstring_tokens=self.docstring_tokens,
            code_tokens=self.normalized_tokens if normalized else self.code_tokens,
            repo=self.repo, path=self.path, func_name=self.func_name, original_string=self.original_string,
            language="python", code=self.normalized_code if normalized else self.code, docstring=self.docstring,
        )
