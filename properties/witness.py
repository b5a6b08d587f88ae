"""Witnesses: a property's own check, run on a known-bad variant, must fail.

Every property in this suite has a witness (DESIGN.md): the same check, run on a known-bad
variant (naive softmax, dropout without the 1/(1-p) rescale, N(0, 1) init, plain sigmoid),
must fail. A check that passes on the known-bad variant cannot tell bad from good, so the
property it backs proves nothing; ``assert_fails_on`` says that in one line::

    assert_fails_on(naive_softmax, test_softmax_sums_to_one)  # a @given property
    assert_fails_on(1.0, check_recovers_gradient, 2.0**-27)  # a plain check, extra args

It calls ``check(variant, *args, **kwargs)`` and passes only if the check fails, returning
the failure so a witness can also test what it says (which layer it blames, say).

What counts as failing: an ``AssertionError`` (``assert``, ``torch.testing.assert_close``,
``pytest.approx``, the falsifying example hypothesis found, or several of them grouped) or
pytest's ``Failed`` (``pytest.fail``, a ``pytest.raises`` that saw nothing). Anything else
(a TypeError, hypothesis' Flaky, Unsatisfiable or a failed health check) propagates: a check
that crashes on the variant has not judged it, so the witness is broken, not passing.

Hypothesis-driven checks: pass the property itself, a ``@given`` test whose first parameter
is the implementation under test (``pytest.mark.parametrize`` supplies the real one). It
runs under the active profile, so for a witness that holds in every profile either the
variant fails on every input the strategy can draw, or the property pins the input that
exposes it with ``@example`` (a good edge case for the real implementation too; hypothesis
runs explicit examples first and stops there). Call it from a plain test, not from inside
another ``@given``: hypothesis does not nest.
"""

import functools
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import is_hypothesis_test
from hypothesis.errors import Flaky

__all__ = ["assert_fails_on", "describe"]

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlist = 4


def describe(obj: object) -> str:
    """A short readable name for a variant or a check (messages name both)."""
    if isinstance(obj, functools.partial):
        parts = [describe(obj.func)]
        parts += [_SHORT.repr(a) for a in obj.args]
        parts += [f"{k}={_SHORT.repr(v)}" for k, v in obj.keywords.items()]
        return f"partial({', '.join(parts)})"
    name = getattr(obj, "__qualname__", None)
    if isinstance(name, str) and callable(obj):
        code = getattr(obj, "__code__", None)
        if name.endswith("<lambda>") and code is not None:
            return f"<lambda at {Path(code.co_filename).name}:{code.co_firstlineno}>"
        return name
    return _SHORT.repr(obj)


def _is_failure(error: BaseException) -> bool:
    """Did the check fail (as opposed to crash)? Hypothesis' FlakyFailure is an exception
    group of assertions too, but a check that fails only sometimes has not failed."""
    if isinstance(error, Flaky):
        return False
    if isinstance(error, (AssertionError, pytest.fail.Exception)):
        return True
    if isinstance(error, BaseExceptionGroup):
        return all(_is_failure(e) for e in error.exceptions)
    return False


def assert_fails_on(
    variant: Any,
    check: Callable[..., object],
    *args: Any,
    variant_name: str | None = None,
    **kwargs: Any,
) -> BaseException:
    """Pass only if ``check(variant, *args, **kwargs)`` fails; return that failure.

    Raises AssertionError naming the check and the variant (``variant_name`` if given, else a
    short description) when the check passes on it; any other exception from the check
    propagates unchanged (see the module docstring for what counts as failing).
    """
    try:
        check(variant, *args, **kwargs)
    except BaseException as error:
        if _is_failure(error):
            return error
        raise
    how = (
        "hypothesis found no falsifying example"
        if is_hypothesis_test(check)
        else "it raised no assertion"
    )
    name = variant_name if variant_name is not None else describe(variant)
    raise AssertionError(
        f"{describe(check)} passed on the known-bad variant {name}: {how}, so it cannot "
        "tell that variant from a correct one"
    )
