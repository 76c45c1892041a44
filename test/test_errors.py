"""casnet_core.errors.one_line: what every one-line error message of the project is made of."""

from __future__ import annotations

from casnet_core.errors import MAX_ERROR_CHARS, one_line


def test_a_multi_line_message_becomes_one_line_with_single_spaces():
    error = ValueError("bad bag:\n  frame 3\tis\r\ntruncated  ")
    assert one_line(error) == "bad bag: frame 3 is truncated"


def test_an_exception_without_message_is_named_by_its_type():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(OSError("   ")) == "OSError"


def test_a_long_message_is_cut_to_the_limit_and_marked():
    text = "x" * (MAX_ERROR_CHARS + 50)
    assert one_line(text) == "x" * (MAX_ERROR_CHARS - 3) + "..."
    assert one_line(RuntimeError("y" * 40), max_chars=10) == "yyyyyyy..."
    exact = "z" * MAX_ERROR_CHARS
    assert one_line(exact) == exact
