"""Functions written to exercise AdvTest normalisation: each has a golden output in
tests/test_data_normalize.py. They run; `python edge_cases.py` prints nothing and exits 0."""

import functools
import os

counter = 0
DEFAULT_TIMEOUT = 3.0


def count_calls(func):
    """Wrap a function so that every call adds one to the module counter."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        """Add one to the module counter, then call the wrapped function."""
        global counter
        counter += 1
        return func(*args, **kwargs)

    return wrapper


@count_calls
def scale_all(values, factor=2):
    """Multiply every value by a factor, skipping missing ones."""
    return [value * factor for value in values if value is not None]


def make_accumulator(start):
    """Build a closure that keeps a running total starting at the given value."""
    total = start

    def add(amount):
        nonlocal total
        total += amount
        return total

    return add


def split_words(text, *, sep=None, maxsplit=-1, keep_empty=False):
    """Split text into words, optionally keeping the empty ones."""
    parts = text.split(sep, maxsplit)
    return parts if keep_empty else [part for part in parts if part]


def merge_options(base, *overrides, **extra):
    """Merge option dictionaries from left to right, keyword options last."""
    merged = dict(base)
    for override in overrides:
        merged.update(override)
    merged.update(extra)
    return merged


def unique_sorted(items):
    """Return the distinct items in sorted order, shadowing the list builtin."""
    list = []
    seen = set()
    for item in sorted(items):
        if item not in seen:
            seen.add(item)
            list.append(item)
    return list


def factorial(n):
    """Compute the factorial of a non-negative integer recursively."""
    if n <= 1:
        return 1
    return n * factorial(n - 1)


async def gather_lengths(sources, timeout=DEFAULT_TIMEOUT):
    """Await every source and collect the length of what each one returns."""
    lengths = {}
    async for name, data in sources:
        lengths[name] = len(data)
    return lengths


def nested_comprehensions(matrix):
    """Flatten a matrix row by row and pair each value with its squared value."""
    flat = [cell for row in matrix for cell in row]
    return {cell: cell ** 2 for cell in flat}, sum(x for x in flat)


def join_paths(*parts):
    """Join path parts with the operating system separator, ignoring empty parts."""
    import posixpath as pp
    from os import sep
    cleaned = [p for p in parts if p]
    return pp.join(*cleaned) if sep == "/" else os.path.join(*cleaned)


def describe_error(action):
    """Run an action and describe the error it raises, if any."""
    try:
        action()
    except (ValueError, KeyError) as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def first_long_word(words, minimum=5):
    """Find the first word at least as long as the minimum, using an assignment expression."""
    if any((found := word) and len(word) >= minimum for word in words):
        return found
    return None


class Shape:
    """A shape with a name."""

    def __init__(self, name):
        """Remember the name of the shape for later descriptions."""
        self.name = name

    def describe(self, prefix="shape"):
        """Describe the shape with a prefix and its name."""
        label = f"{prefix}: {self.name}"
        return label

    @staticmethod
    def sides_of(kind):
        """Look up the number of sides for a kind of polygon."""
        class Table:
            triangle = 3
            square = triangle + 1

        return getattr(Table, kind, 0)


if __name__ == "__main__":
    assert scale_all([1, None, 2]) == [2, 4] and counter == 1
    assert make_accumulator(1)(2) == 3
    assert split_words("a  b") == ["a", "b"]
    assert merge_options({"a": 1}, {"b": 2}, c=3) == {"a": 1, "b": 2, "c": 3}
    assert unique_sorted([3, 1, 3]) == [1, 3]
    assert factorial(5) == 120
    assert nested_comprehensions([[1, 2], [3]]) == ({1: 1, 2: 4, 3: 9}, 6)
    assert join_paths("a", "", "b") == os.path.join("a", "b")
    assert describe_error(lambda: {}["k"]) == "KeyError: 'k'"
    assert first_long_word(["ab", "abcdef"]) == "abcdef"
    assert Shape("box").describe() == "shape: box" and Shape.sides_of("square") == 4
