"""The pytest plugin: ``stability.testing`` as fixtures, a report of what was probed, float16.

Registered through ``[project.entry-points.pytest11]`` (``pip install stability`` loads it in
every pytest run); without the install, ``pytest -p stability.integrations.pytest_plugin``.

- ``stability_check``: the assertions of ``stability.testing`` as methods
  (``variance_preserved``, ``gradients_finite``, ``no_overflow``) plus ``probe``, taking what
  they take (a tensor, a dict of keyword arguments such as a Hugging Face batch, or a tuple
  of positional arguments; any output); each runs one pass, fails with the assertion's
  message and records the per-layer statistics of that same pass, named by qualified
  module name.
- ``@pytest.mark.stability_float16`` (or ``stability_bfloat16``): the checks of that test run
  its models under float16 emulation (``core.emulate_model``: weights, inputs and every leaf
  module's output and gradient rounded); ``stability_emulate(model)`` is the same context
  for the test's own code, a no-op without the marker; ``stability_dtype`` says which.
- ``--stability-report DIR``: at the end of the session, every probed layer of every test
  into ``DIR/stability_probed.csv`` and ``.json`` and a page, ``DIR/stability_probed.html``.

Importing this module costs nothing: torch and the rest load when a fixture is first used.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torch import nn

    from stability.testing.layers import Inputs, Layers

MARKERS = {"stability_float16": "float16", "stability_bfloat16": "bfloat16"}
_ROWS = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stability", "numerical stability of your models")
    group.addoption(
        "--stability-report",
        metavar="DIR",
        default=None,
        help="write what the stability fixtures probed (CSV, JSON and an HTML page) to DIR",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, dtype in MARKERS.items():
        config.addinivalue_line(
            "markers", f"{name}: run this test's stability checks under {dtype} emulation"
        )
    config.stash[_ROWS] = []
    out = config.getoption("stability_report", None)
    if out is not None:
        from stability.integrations.pytest_report import REPORT_FILES
        from stability.results.files import writable_path

        for name in REPORT_FILES:  # bad input fails before any test runs
            writable_path(Path(out) / name, "--stability-report file")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = session.config.getoption("stability_report", None)
    if out is None:
        return
    from stability.integrations.pytest_report import write_probed

    paths = write_probed(Path(out), session.config.stash.get(_ROWS, []))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"stability: probed layers written to {', '.join(map(str, paths))}")


class Checker:
    """``stability.testing``'s assertions, run under the test's dtype and recorded."""

    def __init__(self, test: str, dtype: str | None, rows: list[dict[str, Any]]) -> None:
        self.test = test
        self.dtype = dtype
        self._rows = rows

    def emulate(self, model: "nn.Module") -> AbstractContextManager[Any]:
        """The test's dtype around ``model`` (a no-op without a stability marker)."""
        if self.dtype is None:
            return nullcontext(model)
        from stability.core.emulate_model import emulate

        return emulate(model, self.dtype)

    def _run(
        self,
        check: str,
        model: "nn.Module",
        x: "Inputs",
        modules: "Sequence[nn.Module] | None",
        judge: "Callable[[Layers], str | None]",
        precision: str | None = None,
        purpose: str = "values",
    ) -> "Layers":
        """One measured pass under the test's dtype, judged, recorded; raise on a failure."""
        from stability.integrations.pytest_report import layer_rows
        from stability.testing.layers import measure

        with self.emulate(model):
            layers = measure(model, x, modules, precision or self.dtype, purpose)
        message = judge(layers)
        outcome = "passed" if message is None else "failed"
        first_line = "" if message is None else message.splitlines()[0]
        self._rows.extend(layer_rows(self.test, check, self.dtype, layers, outcome, first_line))
        if message is not None:
            raise AssertionError(message)
        return layers

    def variance_preserved(
        self,
        model: "nn.Module",
        x: "Inputs",
        band: tuple[float, float] = (-1.0, 1.0),
        modules: "Sequence[nn.Module] | None" = None,
    ) -> None:
        """``stability.testing.assert_variance_preserved``, recorded."""
        from stability.testing.checks import check_band, variance_message

        check_band(band)
        self._run("variance_preserved", model, x, modules,
                  lambda layers: variance_message(layers, band), purpose="variance")  # fmt: skip

    def gradients_finite(
        self, model: "nn.Module", x: "Inputs", modules: "Sequence[nn.Module] | None" = None
    ) -> None:
        """``stability.testing.assert_gradients_finite``, recorded."""
        from stability.testing.checks import finite_message

        self._run("gradients_finite", model, x, modules,
                  lambda layers: finite_message(layers, model))  # fmt: skip

    def no_overflow(
        self,
        model: "nn.Module",
        x: "Inputs",
        dtype: str | None = None,
        modules: "Sequence[nn.Module] | None" = None,
    ) -> None:
        """No overflow in ``dtype`` (default: the marker's dtype, else float16)."""
        from stability.testing.checks import overflow_dtype, overflow_message

        target = dtype or self.dtype or "float16"
        overflow_dtype(target)
        self._run("no_overflow", model, x, modules,
                  lambda layers: overflow_message(layers, target), precision=target)  # fmt: skip

    def probe(
        self, model: "nn.Module", x: "Inputs", modules: "Sequence[nn.Module] | None" = None
    ) -> list[Any]:
        """Per-layer statistics (``LayerStats``, the layers ``gradients_finite`` reads),
        recorded; no assertion."""
        return self._run("probe", model, x, modules, lambda layers: None).stats


def _dtype_of(node: pytest.Item) -> str | None:
    found = [dtype for name, dtype in MARKERS.items() if node.get_closest_marker(name)]
    if len(found) > 1:
        raise pytest.UsageError(f"{node.nodeid}: more than one of {sorted(MARKERS)} on one test")
    return found[0] if found else None


@pytest.fixture
def stability_dtype(request: pytest.FixtureRequest) -> str | None:
    """``"float16"`` or ``"bfloat16"`` under a stability marker, else None."""
    item = request.node
    return _dtype_of(item) if isinstance(item, pytest.Item) else None


@pytest.fixture
def stability_check(request: pytest.FixtureRequest, stability_dtype: str | None) -> Checker:
    """``stability.testing``'s assertions as methods; what they probe goes to the report."""
    return Checker(request.node.nodeid, stability_dtype, request.config.stash[_ROWS])


@pytest.fixture
def stability_emulate(
    stability_dtype: str | None,
) -> Iterator[Callable[["nn.Module"], AbstractContextManager[Any]]]:
    """``with stability_emulate(model):`` runs ``model`` in the marker's dtype (else as is)."""
    yield Checker("", stability_dtype, []).emulate
