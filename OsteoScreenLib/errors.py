"""User-facing errors: one line that says what is wrong and what to do."""


class OsteoScreenError(Exception):
    """A problem with the user's input or request (CLI exit status 1, no traceback)."""

    exit_code = 1
