"""Lifecycle transitions of casnet_node that never end the node by an exception.

rclpy turns an exception raised in a transition callback into a silent ERROR, runs ``on_error``, and
finalizes the node for good when ``on_error`` raises too: one bad parameter would then need a restart of
the process. ``guarded`` makes a transition log the exception in one line, undo its partial work and
return a plain result instead, so the node lands in a state it can leave again: a failed configure stays
unconfigured, a failed activate inactive, a failed deactivate or cleanup goes through ``on_error`` (which
cleans up) to unconfigured.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from rclpy.lifecycle import TransitionCallbackReturn

Transition = Callable[[Any, Any], TransitionCallbackReturn]


def run_each(logger: Any, what: str, *steps: Callable[[], None]) -> bool:
    """Runs every step, even after one raised; logs each failure in one line. True when all succeeded."""
    succeeded = True
    for step in steps:
        try:
            step()
        except Exception as error:  # each step frees its own resources: the next one still runs
            logger.error(f"{what}: {getattr(step, '__name__', 'a step')} failed: {type(error).__name__}: {error}")
            succeeded = False
    return succeeded


def guarded(transition: str, *, undo: tuple[str, ...] = (), result: TransitionCallbackReturn,
            outcome: str) -> Callable[[Transition], Transition]:
    """Decorates the node's ``on_<transition>``: an exception is logged ("<transition> failed: <type>: <message>;
    <outcome>"), the node's methods named in ``undo`` run (each even when another fails), and ``result`` is
    returned (FAILURE: back to the state before; ERROR: through ``on_error``)."""

    def decorate(method: Transition) -> Transition:
        @functools.wraps(method)
        def wrapper(node: Any, state: Any) -> TransitionCallbackReturn:
            try:
                return method(node, state)
            except Exception as error:
                node.get_logger().error(f"{transition} failed: {type(error).__name__}: {error}; {outcome}")
                run_each(node.get_logger(), f"undoing {transition}", *(getattr(node, name) for name in undo))
                return result

        return wrapper

    return decorate
