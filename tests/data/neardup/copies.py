"""Real functions, copied as they are; all but `truth` near-duplicate one in origin.py
(tests/test_data_neardup.py).

From sympy 1.14 (functions/elementary/hyperbolic.py, class sinh; core/containers.py, class
Tuple) and CPython 3.11 (operator.py).
"""


class sinh:
    def inverse(self, argindex=1):
        """
        Returns the inverse of this function.
        """
        return asinh


class Tuple:
    def tuple_count(self, value) -> int:
        """Return number of occurrences of value."""
        return self.args.count(value)


def is_not(a, b):
    "Same as a is not b."
    return a is not b


def truth(a):
    "Return True if a is true, False otherwise."
    return True if a else False
