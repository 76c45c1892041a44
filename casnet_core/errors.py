"""Error messages as the project prints them: one line on stderr, never a traceback (``casnet`` commands, bag
reading, training)."""

from __future__ import annotations

# Longest error line printed; the rest of a long message (e.g. a list of paths) is cut.
MAX_ERROR_CHARS = 600


def one_line(error: BaseException | str, *, max_chars: int = MAX_ERROR_CHARS) -> str:
    """An exception or message as one line: whitespace runs joined, the exception's type name when it has no
    message, at most ``max_chars`` long (a cut message ends in "...")."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
