"""User-facing errors: one line that says what is wrong and what to do."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class OsteoScreenError(Exception):
    """A problem with the user's input or request (CLI exit status 1, no traceback)."""

    exit_code = 1


@contextmanager
def about(path) -> Iterator[None]:
    """Errors raised inside name the file ``path`` first: the layers below work on arrays
    and do not know which file the user gave ("L1 not segmented" says nothing of which)."""
    try:
        yield
    except OsteoScreenError as exc:
        if not str(exc).startswith(str(path)):
            exc.args = (f"{path}: {exc}",)
        raise
