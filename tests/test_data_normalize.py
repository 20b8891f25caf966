"""AdvTest normalisation: golden outputs for the functions in tests/data/corpus/edge_cases.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainers.data.extract import mine_file
from trainers.data.normalize import normalize_code

EDGE_CASES = Path(__file__).parent / "data" / "corpus" / "edge_cases.py"

GOLDEN = {
    # nested function with a decorator evaluated in the outer scope; `global` stays
    "count_calls": '''\
def Func(arg_0):

    @functools.wraps(arg_0)
    def arg_1(*arg_2, **arg_3):
        """Add one to the module counter, then call the wrapped function."""
        global counter
        counter += 1
        return arg_0(*arg_2, **arg_3)
    return arg_1''',
    # mined on its own: `func` is free (the enclosing function is outside the snippet)
    "count_calls.wrapper": '''\
def Func(*arg_0, **arg_1):
    global counter
    counter += 1
    return func(*arg_0, **arg_1)''',
    # a decorated function: decorators are not part of the code
    "scale_all": '''\
def Func(arg_0, arg_1=2):
    return [arg_2 * arg_1 for arg_2 in arg_0 if arg_2 is not None]''',
    # `nonlocal` refers to the outer local, which is renamed
    "make_accumulator": '''\
def Func(arg_0):
    arg_1 = arg_0

    def arg_2(arg_3):
        nonlocal arg_1
        arg_1 += arg_3
        return arg_1
    return arg_2''',
    # keyword-only parameters are renamed; keyword names in calls would not be
    "split_words": '''\
def Func(arg_0, *, arg_1=None, arg_2=-1, arg_3=False):
    arg_4 = arg_0.split(arg_1, arg_2)
    return arg_4 if arg_3 else [arg_5 for arg_5 in arg_4 if arg_5]''',
    # *args and **kwargs; builtins (`dict`) stay
    "merge_options": '''\
def Func(arg_0, *arg_1, **arg_2):
    arg_3 = dict(arg_0)
    for arg_4 in arg_1:
        arg_3.update(arg_4)
    arg_3.update(arg_2)
    return arg_3''',
    # a local named like a builtin is a local
    "unique_sorted": '''\
def Func(arg_0):
    arg_1 = []
    arg_2 = set()
    for arg_3 in sorted(arg_0):
        if arg_3 not in arg_2:
            arg_2.add(arg_3)
            arg_1.append(arg_3)
    return arg_1''',
    # recursion of a module-level function
    "factorial": '''\
def Func(arg_0):
    if arg_0 <= 1:
        return 1
    return arg_0 * Func(arg_0 - 1)''',
    # async def and async for; a default taken from a global stays
    "gather_lengths": '''\
async def Func(arg_0, arg_1=DEFAULT_TIMEOUT):
    arg_2 = {}
    async for arg_3, arg_4 in arg_0:
        arg_2[arg_3] = len(arg_4)
    return arg_2''',
    # comprehension variables, numbered in order of first appearance in the text
    "nested_comprehensions": '''\
def Func(arg_0):
    arg_1 = [arg_2 for arg_3 in arg_0 for arg_2 in arg_3]
    return ({arg_2: arg_2 ** 2 for arg_2 in arg_1}, sum((arg_4 for arg_4 in arg_1)))''',
    # imported names stay, inside the function and out
    "join_paths": '''\
def Func(*arg_0):
    import posixpath as pp
    from os import sep
    arg_1 = [arg_2 for arg_2 in arg_0 if arg_2]
    return pp.join(*arg_1) if sep == '/' else os.path.join(*arg_1)''',
    "describe_error": '''\
def Func(arg_0):
    try:
        arg_0()
    except (ValueError, KeyError) as arg_1:
        return f'{type(arg_1).__name__}: {arg_1}'
    return 'no error\'''',
    # a walrus in a generator binds in the function
    "first_long_word": '''\
def Func(arg_0, arg_1=5):
    if any(((arg_2 := arg_3) and len(arg_3) >= arg_1 for arg_3 in arg_0)):
        return arg_2
    return None''',
    # a method: `self` is a parameter like any other
    "Shape.describe": '''\
def Func(arg_0, arg_1='shape'):
    arg_2 = f'{arg_1}: {arg_0.name}'
    return arg_2''',
    # a class inside a function is a local; its attributes are not
    "Shape.sides_of": '''\
def Func(arg_0):

    class arg_1:
        triangle = 3
        square = triangle + 1
    return getattr(arg_1, arg_0, 0)''',
}


@pytest.fixture(scope="module")
def mined():
    result = mine_file(EDGE_CASES, repo="corpus", path="edge_cases.py")
    assert result.rejected == []
    return {pair.func_name: pair for pair in result.pairs}


@pytest.mark.parametrize("func_name", sorted(GOLDEN))
def test_golden_normalisation(mined, func_name):
    pair = mined[func_name]
    assert pair.normalized_code == GOLDEN[func_name]
    ast.parse(pair.normalized_code)
    assert pair.normalized_tokens[:4] in {("def", "Func", "(", "arg_0"), ("def", "Func", "(", "*"), ("async", "def", "Func", "(")}


def test_every_edge_case_has_a_golden_output(mined):
    assert set(mined) - set(GOLDEN) == {"Shape.__init__"}


def test_train_code_keeps_names_and_drops_docstring_and_decorators(mined):
    pair = mined["scale_all"]
    assert pair.code == "def scale_all(values, factor=2):\n    return [value * factor for value in values if value is not None]"
    assert pair.original_string.startswith('def scale_all(values, factor=2):\n    """Multiply')


CASES = [
    # (source, expected) for constructs the edge-case file does not hold
    ("def f(a, /, b):\n    return a + b", "def Func(arg_0, /, arg_1):\n    return arg_0 + arg_1"),
    ("def f(xs):\n    return sorted(xs, key=lambda x: -x)", "def Func(arg_0):\n    return sorted(arg_0, key=lambda arg_1: -arg_1)"),
    ("def f(xs):\n    return [x for x in xs] + [x for x in x]",
     "def Func(arg_0):\n    return [arg_1 for arg_1 in arg_0] + [arg_1 for arg_1 in x]"),
    ("def f(p):\n    match p:\n        case [a, *rest]:\n            return rest\n        case {'k': v, **others}:\n            return (v, others)",
     "def Func(arg_0):\n    match arg_0:\n        case [arg_1, *arg_2]:\n            return arg_2\n        case {'k': arg_3, **arg_4}:\n            return (arg_3, arg_4)"),
    ("def f(self):\n    return self.f() + f()", "def Func(arg_0):\n    return arg_0.f() + Func()"),
    ("def f(x):\n    global y\n    y = x\n    del x", "def Func(arg_0):\n    global y\n    y = arg_0\n    del arg_0"),
    ("def f(path):\n    with open(path) as fh, lock:\n        return fh.read()",
     "def Func(arg_0):\n    with open(arg_0) as arg_1, lock:\n        return arg_1.read()"),
    ("def f(x: int = 0) -> List[int]:\n    y: int = x\n    return [y]", "def Func(arg_0: int=0) -> List[int]:\n    arg_1: int = arg_0\n    return [arg_1]"),
    # a method of a local class sees the function's `x`, not the class attribute `x`
    ("def f(x):\n    class C:\n        x = 1\n        def m(self):\n            return x\n    return C",
     "def Func(arg_0):\n\n    class arg_1:\n        x = 1\n\n        def m(arg_2):\n            return arg_0\n    return arg_1"),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_normalise_constructs(source, expected):
    assert normalize_code(source) == expected
    ast.parse(expected)


def test_normalize_code_wants_one_function():
    with pytest.raises(ValueError, match="exactly one function"):
        normalize_code("x = 1")
