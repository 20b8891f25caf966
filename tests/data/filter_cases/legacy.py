# A Python 2 module: the file does not parse, so it is mined function by function.


def greet(name):
    """Print a greeting for the given name, Python 2 style."""
    print "hello", name


def farewell(name):
    """Build a farewell message for the given name."""
    return "goodbye " + name
