"""One function per filter, named after what should happen to it (see tests/test_data_filters.py).

The duplicate cases come last and in order: the first of each kind is kept.
"""


def helper(value):
    """Helper."""
    return value


def describe_fox(count):
    """
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    the quick brown fox jumps over the lazy dog again
    """
    return count * 2


def fetch_page(url):
    """Fetch a page; see https://example.org/format for what it returns."""
    return url.upper()


def bold(text):
    """Wrap the text in <b>bold</b> tags for the web page."""
    return "<b>" + text + "</b>"


def next_node(tree):
    """Return the next node, in the order of :func:`walk`."""
    return tree.children[0]


def shout(word):
    """Make a word loud.

    >>> shout("hi")
    'HI'
    """
    return word.upper() + "!"


def whisper(word):
    """Make a word quiet, for example
    >>> whisper("HI")
    'hi'
    """
    return word.lower()


def clamp(x, low, high):
    """Args:
        x: the value to clamp
        low, high: the bounds
    """
    return max(low, min(x, high))


def summa(a, b):
    """Вернуть сумму двух чисел."""
    return a + b


def reserved(name):
    """Reserve the name for a later release of the library."""


def placeholder(name):
    """Return the placeholder value used by subclasses."""
    pass


def area(width, height):
    """Compute the area of a rectangle from its sides."""
    return width * height


class Other:
    """A namespace holding a second copy of `area`."""

    @staticmethod
    def area(width, height):
        """Compute the area of a rectangle from its sides."""
        return width * height


def area_again(width, height):
    """compute the AREA of a rectangle, from its sides"""
    return height * width


def rect_area(w, h):
    """Multiply the two sides of a rectangle together."""
    return w * h


class Marker:
    """Generated accessors: code that differs only in a string."""

    def get_color(self):
        """Return the color of the marker as a string."""
        return self["color"]

    def get_size(self):
        """Return the size of the marker in points."""
        return self["size"]

    def get_opacity(self):
        """Return the opacity of the marker between 0 and 1."""
        return self["opacity"]

    def get_symbol(self):
        """Return the symbol the marker is drawn with."""
        return self["symbol"]
