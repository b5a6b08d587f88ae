"""The one exception type the CLI turns into a one-line message and exit code 2."""


class StabilityError(ValueError):
    """Bad input from a user: unknown names, impossible sizes, unusable files.

    Subclasses ValueError so library callers can catch it as the usual bad-argument error.
    """
