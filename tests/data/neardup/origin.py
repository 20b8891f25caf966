"""Real functions, copied as they are, that copies.py near-duplicates (tests/test_data_neardup.py).

From sympy 1.14 (functions/elementary/exponential.py, class exp), numpy 2.3
(_typing/_nested_sequence.py, class _NestedSequence) and CPython 3.11 (operator.py).
"""


class exp:
    def inverse(self, argindex=1):
        """
        Returns the inverse function of ``exp(x)``.
        """
        return log


class _NestedSequence:
    def count(self, value: Any, /) -> int:
        """Return the number of occurrences of `value`."""
        raise NotImplementedError


def is_(a, b):
    "Same as a is b."
    return a is b
