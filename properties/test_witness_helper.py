"""The suite's own witness helper: ``assert_fails_on`` passes exactly when the check fails.

Every other witness in ``properties/`` leans on it, so it is held to the same rule: each
claim here has a witness on which it must fail. It passes for a check that fails on the
variant (a plain ``assert``, ``assert_close``, ``pytest.fail``, a ``@given`` property with a
falsifying example, an explicit one, several distinct ones); it fails, naming the variant,
when the check passes; and a check that crashes is reported as a crash, not as a failure.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import assume, example, given, is_hypothesis_test, settings
from hypothesis import strategies as st
from hypothesis.errors import FailedHealthCheck, Flaky
from witness import assert_fails_on, describe

CHAPTER = "The property suite itself: the witness helper"

Check = Callable[..., object]


def good_abs(x: int) -> int:
    return abs(x)


def bad_abs(x: int) -> int:
    """Known-bad: forgets the sign, so every negative input stays negative."""
    return x


def check_nonnegative(impl: Callable[[int], int], x: int = -3) -> None:
    assert impl(x) >= 0, f"{impl.__name__}({x}) < 0"


def check_close(impl: Callable[[int], int]) -> None:
    torch.testing.assert_close(torch.tensor(float(impl(-3))), torch.tensor(3.0))


def check_with_pytest_fail(impl: Callable[[int], int]) -> None:
    if impl(-3) < 0:
        pytest.fail("negative")


def check_raises_on_negative(impl: Callable[[int], int]) -> None:
    """Passes when ``impl`` raises ValueError: a ``pytest.raises`` that sees nothing fails."""
    with pytest.raises(ValueError):
        impl(-3)


def strict_abs(x: int) -> int:
    if x < 0:
        raise ValueError("negative input")
    return x


# @given checks whose first parameter is the implementation, the shape of the suite's
# properties (there pytest.mark.parametrize supplies the real one; these are not collected).
@given(x=st.integers())
def property_nonnegative(impl: Callable[[int], int], x: int) -> None:
    assert impl(x) >= 0


@given(x=st.integers(min_value=0, max_value=10))
@example(x=-7)  # outside the strategy: only the explicit example can expose bad_abs
def property_pinned(impl: Callable[[int], int], x: int) -> None:
    assert impl(x) >= 0


@given(x=st.integers())
@settings(max_examples=200)
def two_distinct_failures(impl: Callable[[int], int], x: int) -> None:
    """Two different assertions fail on ``bad_abs``: hypothesis groups them."""
    y = impl(x)
    assert y > -100, "far below"
    assert y >= 0, "below"


def check_grouped(impl: Callable[[int], int]) -> None:
    """Two assertions failing together, grouped as hypothesis reports distinct failures."""
    if impl(-3) < 0:
        raise ExceptionGroup("two failures", [AssertionError("a"), AssertionError("b")])


# (id, known-bad variant, check, the variant the check accepts)
CASES: list[tuple[str, Any, Check, Any]] = [
    ("assert", bad_abs, check_nonnegative, good_abs),
    ("assert_close", bad_abs, check_close, good_abs),
    ("pytest-fail", bad_abs, check_with_pytest_fail, good_abs),
    ("pytest-raises-saw-nothing", good_abs, check_raises_on_negative, strict_abs),
    ("assertion-group", bad_abs, check_grouped, good_abs),
    ("given-falsified", bad_abs, property_nonnegative, good_abs),
    ("given-explicit-example", bad_abs, property_pinned, good_abs),
    ("given-distinct-failures", bad_abs, two_distinct_failures, good_abs),
]


@pytest.mark.parametrize(
    ("variant", "check"), [(v, c) for _, v, c, _ in CASES], ids=[i for i, *_ in CASES]
)
def test_assert_fails_on_passes_when_check_fails(variant: Any, check: Check) -> None:
    """The check fails on the variant: the helper passes and hands back the failure."""
    error = assert_fails_on(variant, check)
    assert isinstance(error, (AssertionError, pytest.fail.Exception, ExceptionGroup))


@pytest.mark.parametrize(
    ("variant", "check"), [(g, c) for _, _, c, g in CASES], ids=[i for i, *_ in CASES]
)
def test_witness_assert_fails_on_passes_when_check_fails(variant: Any, check: Check) -> None:
    """The same check on a variant it accepts: the helper fails, naming variant and check."""
    with pytest.raises(AssertionError) as raised:
        assert_fails_on(variant, check)
    message = str(raised.value)
    assert f"known-bad variant {describe(variant)}:" in message
    assert message.startswith(describe(check))
    if is_hypothesis_test(check):
        assert "hypothesis found no falsifying example" in message


def test_assert_fails_on_passes_extra_arguments() -> None:
    """``*args`` and ``**kwargs`` reach the check after the variant; ``variant_name`` names it."""
    error = assert_fails_on(bad_abs, check_nonnegative, -5)
    assert "bad_abs(-5) < 0" in str(error)
    assert_fails_on(bad_abs, check_nonnegative, x=-1)


def test_witness_assert_fails_on_passes_extra_arguments() -> None:
    """On an input where the known-bad variant happens to be right, the same call fails."""
    with pytest.raises(AssertionError, match="known-bad variant the identity: "):
        assert_fails_on(bad_abs, check_nonnegative, 5, variant_name="the identity")


# -- a crash is not a failure -----------------------------------------------------------------


def check_crashes(impl: Callable[[int], int]) -> None:
    impl("three")  # type: ignore[arg-type]


@given(x=st.integers())
def check_filters_everything(impl: Callable[[int], int], x: int) -> None:
    assume(False)


def check_group_with_a_crash(impl: Callable[[int], int]) -> None:
    raise ExceptionGroup("mixed", [AssertionError("a failure"), TypeError("and a crash")])


_calls = {"n": 0}


@given(x=st.just(1))
@settings(database=None)
def check_flaky(impl: Callable[[int], int], x: int) -> None:
    """Fails on the first call only: not a failure of the check but an unreliable one."""
    _calls["n"] += 1
    assert _calls["n"] > 1


CRASHES: list[tuple[str, Check, type[BaseException]]] = [
    ("type-error", check_crashes, TypeError),
    ("group-with-a-crash", check_group_with_a_crash, ExceptionGroup),
    ("health-check", check_filters_everything, FailedHealthCheck),
    ("flaky", check_flaky, Flaky),
]


def check_propagates(
    helper: Callable[..., BaseException], check: Check, raised: type[BaseException]
) -> None:
    """``helper(strict_abs, check)`` must let the crash out, not report a failing check."""
    _calls["n"] = 0
    with pytest.raises(raised):
        helper(strict_abs, check)


@pytest.mark.parametrize(
    ("check", "raised"), [(c, r) for _, c, r in CRASHES], ids=[i for i, *_ in CRASHES]
)
def test_assert_fails_on_propagates_crashes(check: Check, raised: type[BaseException]) -> None:
    check_propagates(assert_fails_on, check, raised)


def lenient_assert_fails_on(variant: Any, check: Check) -> BaseException:
    """Known-bad helper: counts any exception as the check failing."""
    try:
        check(variant)
    except BaseException as error:
        return error
    raise AssertionError("passed")


@pytest.mark.parametrize(
    ("check", "raised"), [(c, r) for _, c, r in CRASHES], ids=[i for i, *_ in CRASHES]
)
def test_witness_assert_fails_on_propagates_crashes(
    check: Check, raised: type[BaseException]
) -> None:
    """A helper that swallows every exception fails the same check."""
    assert_fails_on(lenient_assert_fails_on, check_propagates, check, raised)
