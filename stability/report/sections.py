"""The report's sections: one function each, ``ReportData -> Section``.

A section never fails for lack of input: it says "not run" or "not available" and why.
Adding a section is one function appended to ``SECTIONS``. Tables are pandas DataFrames;
``Table.html`` renders them with ``DataFrame.to_html(escape=True)``, so text from configs and
data is escaped.
"""

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from stability.measure import baseline as bl
from stability.measure import gate as gatekeeper
from stability.measure.stats import ALPHA
from stability.report import figures, notes
from stability.report.doctor_cases import MARKER
from stability.report.inputs import ReportData, environment_facts
from stability.report.junit import property_table, read_junit
from stability.report.runner import PRECISION_CONFIGS, PRECISION_DTYPES
from stability.results.tables import growth_table, summary_table
from stability.sweep.run import DEFAULT_ACTIVATIONS, DEFAULT_INITS
from stability.train.lr_search import lr_map_figure

Status = Literal["complete", "partial", "not run", "not available"]
DEFAULT_SHAPE = {"depth": 50, "width": 256, "batch": 256}
SHAPE_KEYS = ("depth", "width", "batch", "bias", "device")
FIGURE_CACHE = "figures"


@dataclass(frozen=True)
class Figure:
    """An inline image: a data URI, its alt text, and a caption saying what to look for."""

    uri: str
    alt: str
    caption: str


@dataclass(frozen=True)
class Table:
    """A DataFrame shown in the page (or only linked) and written beside it as CSV."""

    slug: str  # CSV file name stem, unique in the report
    caption: str
    frame: pd.DataFrame
    show: bool = True
    max_rows: int = 200
    wrap: bool = False  # long text in cells: let it wrap instead of scrolling sideways

    @property
    def html(self) -> str:
        """Escaped HTML of at most ``max_rows`` rows (the CSV has them all)."""
        frame = self.frame.head(self.max_rows)
        return frame.to_html(
            index=False,
            escape=True,
            na_rep="—",
            border=0,
            classes="data wrap" if self.wrap else "data",
            float_format=_float,
        )


def _float(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.3g}"
    return f"{v:.4g}"


@dataclass
class Section:
    """One section of the page."""

    slug: str
    title: str
    intro: str
    status: Status = "complete"
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    verdict: str = ""  # one line for the summary at the top and the CLI
    failed: bool = False  # something this section reports failed (a property, the gate)


_CODE_VERSION: list[str] = []


def _code_version() -> str:
    """Hash of the report's own sources and matplotlib: a change redraws every figure."""
    if not _CODE_VERSION:
        h = hashlib.sha256(matplotlib.__version__.encode())
        for path in sorted(Path(__file__).parent.iterdir()):
            if path.suffix in (".py", ".html", ".css"):
                h.update(path.read_bytes())
        _CODE_VERSION.append(h.hexdigest())
    return _CODE_VERSION[0]


def _input_hash(h: "hashlib._Hash", item: object) -> None:
    if isinstance(item, pd.DataFrame):
        h.update(repr((list(item.columns), item.shape)).encode())
        h.update(pd.util.hash_pandas_object(item, index=True).to_numpy().tobytes())
    else:
        h.update(repr(item).encode())


def _figure(
    data: ReportData,
    name: str,
    inputs: Sequence[object],
    draw: Callable[[], MplFigure],
    alt: str,
    caption: str,
    fmt: str = "svg",
) -> Figure:
    """Draw (or take from the cache, keyed by the code and the inputs) and encode a figure.

    Drawing the atlas costs seconds; a re-run with nothing new reuses the encoded image.
    """
    h = hashlib.sha256(f"{name}|{fmt}|{_code_version()}".encode())
    for item in inputs:
        _input_hash(h, item)
    path = None
    if data.cache_dir is not None:
        path = data.cache_dir / FIGURE_CACHE / f"{name}-{h.hexdigest()[:24]}.txt"
        if path.exists():
            path.touch()  # marks it used by this build; unused ones are pruned
            return Figure(path.read_text(encoding="ascii"), alt, caption)
    uri = figures.encode(draw(), fmt)
    if path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(uri, encoding="ascii")
    return Figure(uri, alt, caption)


# -- row selection -----------------------------------------------------------------------------
def _shape_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    """Rows of one network shape: the default (50 x 256, batch 256) if stored, else the
    shape with the most rows, so a store holding only a small sweep still renders."""
    if sweep.empty or not set(SHAPE_KEYS) <= set(sweep.columns):
        return pd.DataFrame()
    default = sweep[
        (sweep["depth"] == DEFAULT_SHAPE["depth"])
        & (sweep["width"] == DEFAULT_SHAPE["width"])
        & (sweep["batch"] == DEFAULT_SHAPE["batch"])
    ]
    pool = default if not default.empty else sweep
    counts = pool.groupby(list(SHAPE_KEYS)).size()
    key = counts.idxmax()
    mask = np.ones(len(pool), dtype=bool)
    for name, value in zip(SHAPE_KEYS, cast(tuple[object, ...], key), strict=True):
        mask &= (pool[name] == value).to_numpy()
    return pool[mask]


def _shape_label(rows: pd.DataFrame) -> str:
    r = rows.iloc[0]
    return (
        f"depth {r['depth']}, width {r['width']}, batch {r['batch']}, "
        f"bias {'on' if r['bias'] else 'off'}, device {r['device']}"
    )


def _atlas_rows(data: ReportData) -> pd.DataFrame:
    rows = _shape_rows(data.sweep)
    if rows.empty:
        return rows
    for dtype in ("float32", "float64"):
        chosen = rows[rows["dtype"] == dtype]
        if not chosen.empty:
            return chosen
    first: pd.DataFrame = rows[rows["dtype"] == rows["dtype"].iloc[0]]
    return first


def _axes(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    return (
        figures.ordered(rows["activation"], DEFAULT_ACTIVATIONS),
        figures.ordered(rows["init"], DEFAULT_INITS),
    )


NO_SWEEP = (
    "No sweep rows in the store: run `stability report` without --no-run, or `stability sweep`."
)


# -- 1. environment ----------------------------------------------------------------------------
def environment(data: ReportData) -> Section:
    facts = environment_facts()
    facts = {
        "generated (UTC)": data.generated,
        "commit": data.commit or "not a git checkout",
        **facts,
        "results store": str(data.db),
        "mode": "quick (--quick)" if data.quick else "full",
    }
    section = Section(
        "environment",
        "1. Environment",
        "Where and with what this report was produced, and which dtypes ran natively or "
        "emulated (on CPU, float16/bfloat16 are computed in float32 and rounded at every "
        "layer boundary).",
    )
    section.tables.append(
        Table(
            "environment",
            "Machine and software",
            pd.DataFrame({"item": list(facts), "value": list(facts.values())}),
        )
    )
    modes = []
    if not data.sweep.empty and "precision_mode" in data.sweep.columns:
        cells = data.sweep.drop_duplicates("cell_key")
        sweep_modes = cells.groupby(["device", "dtype", "precision_mode"]).size()
        modes.append(sweep_modes.rename("sweep cells").reset_index())
    if not data.bench.empty and "precision_mode" in data.bench.columns:
        bench_modes = data.bench.groupby(["device", "dtype", "precision_mode"]).size()
        modes.append(bench_modes.rename("benchmark rows").reset_index())
    if modes:
        merged = modes[0]
        for other in modes[1:]:
            merged = merged.merge(other, how="outer", on=["device", "dtype", "precision_mode"])
        section.tables.append(
            Table("precision-modes", "Which dtypes ran natively and which were emulated", merged)
        )
    else:
        section.notes.append("No sweep or benchmark results yet: no dtype has run.")
        section.status = "partial"
    if data.steps:
        steps = pd.DataFrame(
            [
                {
                    "step": s.name,
                    "status": s.status,
                    "detail": s.detail,
                    "seconds": round(s.seconds, 1),
                }
                for s in data.steps
            ]
        )
        section.tables.append(Table("runner-steps", "What this report run did", steps))
    else:
        section.notes.append("Rendered with --no-run: nothing was computed, the store was read.")
    if not data.runs.empty:
        versions = sorted(set(data.runs["torch_version"].astype(str)))
        if versions != [facts["torch version"]]:
            section.notes.append(
                f"The store holds runs made with torch {', '.join(versions)}; this page was "
                f"rendered with torch {facts['torch version']}."
            )
    return section


# -- 2. stability atlas ------------------------------------------------------------------------
def atlas(data: ReportData) -> Section:
    section = Section(
        "atlas",
        "2. Stability atlas",
        "For each activation (rows) and initialisation (columns): log10 of the per-layer "
        "variance of a depth-L MLP. The band spans the seeds (min to max), the solid line is "
        "their median, the dashed black line the mean-field prediction. Forward: the "
        "pre-activation variance of each layer for x ~ N(0, 1). Backward: the variance of the "
        "gradient at each layer's output, for a loss whose gradient at the top has variance 1.",
    )
    rows = _atlas_rows(data)
    if rows.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    acts, inits = _axes(rows)
    seeds = rows["seed"].nunique()
    label = f"{rows['dtype'].iloc[0]}, {_shape_label(rows)}, {seeds} seed(s)"
    section.notes.append(f"Configuration: {label}.")
    if seeds < 2:
        section.notes.append("Only one seed: the band is a line. The full run uses three.")
        section.status = "partial"
    clip = f"Values beyond 1e±{figures.LOG_CLIP:.0f} (including inf and exactly 0) sit on the rim."
    for direction, measured, theory, color, what in (
        ("forward", "preact_var", "theory_preact_var", figures.FORWARD_COLOR, "signals"),
        ("backward", "grad_var", "theory_grad_var", figures.BACKWARD_COLOR, "gradients"),
    ):
        cols = ["activation", "init", "seed", "layer", measured, theory]
        section.figures.append(
            _figure(
                data,
                f"atlas-{direction}",
                [rows[cols].reset_index(drop=True), acts, inits, color],
                lambda m=measured, t=theory, c=color: figures.atlas(  # type: ignore[misc]
                    rows, m, t, acts, inits, c, "log10 var"
                ),
                f"Grid of {len(acts)} by {len(inits)} small plots of log10 {direction} variance "
                f"against layer, measured band with dashed mean-field prediction.",
                f"{direction.capitalize()}: flat lines near 0 keep {what} alive; lines rising to "
                f"the top edge explode, falling ones vanish. Where the band hugs the dashed line, "
                f"mean-field theory predicts this network. {clip}",
            )
        )
    per_layer = (
        rows.groupby(["activation", "init", "layer"])
        .agg(
            preact_var_median=("preact_var", "median"),
            preact_var_min=("preact_var", "min"),
            preact_var_max=("preact_var", "max"),
            theory_preact_var=("theory_preact_var", "first"),
            grad_var_median=("grad_var", "median"),
            grad_var_min=("grad_var", "min"),
            grad_var_max=("grad_var", "max"),
            theory_grad_var=("theory_grad_var", "first"),
        )
        .reset_index()
    )
    section.tables.append(
        Table(
            "atlas",
            "Per-layer variances behind the atlas (median and range over seeds)",
            per_layer,
            show=False,
        )
    )
    return section


# -- 3. heat map -------------------------------------------------------------------------------
def _pivot(table: pd.DataFrame, column: str, acts: list[str], inits: list[str]) -> pd.DataFrame:
    return table.pivot(index="activation", columns="init", values=column).reindex(
        index=acts, columns=inits
    )


def heatmap(data: ReportData) -> Section:
    section = Section(
        "heatmap",
        "3. Heat map: growth from first to last layer",
        "log10 of the last layer's variance over the first layer's, averaged over seeds: "
        "forward (pre-activations) and backward (gradients, first layer over last). 0 means "
        "the variance is preserved; +2 means it grew a hundredfold.",
    )
    rows = _atlas_rows(data)
    if rows.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    table = growth_table(rows)
    acts, inits = _axes(rows)
    panels = [
        ("forward", _pivot(table, "fwd_log10_growth", acts, inits),
         _pivot(table, "theory_fwd", acts, inits)),
        ("backward", _pivot(table, "bwd_log10_growth", acts, inits),
         _pivot(table, "theory_bwd", acts, inits)),
    ]  # fmt: skip
    section.figures.append(
        _figure(
            data,
            "heatmap",
            [frame for panel in panels for frame in panel[1:] if frame is not None],
            lambda: figures.growth_heatmaps(panels),
            "Two heat maps, forward and backward, of log10 variance growth by activation and "
            "initialisation, red for growth and blue for decay.",
            "Red cells explode, blue cells vanish, white cells keep the variance. Each cell "
            "shows the measured value and, in brackets, the mean-field prediction; grey (nan) "
            "means the network produced non-finite values.",
        )
    )
    summary = summary_table(rows)
    counts = summary["verdict"].value_counts()
    section.verdict = (
        ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(summary)} configs"
    )
    section.notes.append(
        f"Verdicts ({rows['dtype'].iloc[0]}, |log10 growth| > 2 counts as exploding or "
        f"vanishing): {section.verdict}."
    )
    section.tables.append(Table("growth", "Growth per configuration, with verdict", summary))
    return section


# -- 4. precision headroom ---------------------------------------------------------------------
_EVENT_COLUMNS = [
    "overflow_frac", "subnormal_frac", "flush_frac",
    "grad_overflow_frac", "grad_subnormal_frac", "grad_flush_frac",
]  # fmt: skip


def precision(data: ReportData) -> Section:
    section = Section(
        "precision",
        "4. Precision headroom",
        "Per layer, the fraction of values (solid: layer outputs; dashed: gradients) that "
        "overflow to inf, fall into the subnormal range, or flush to zero when stored in "
        "float16 (max 65504, smallest normal 6.1e-5) and bfloat16 (float32's range, 8 "
        "significant bits).",
    )
    shape = _shape_rows(data.sweep)
    if shape.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    reduced = shape[shape["dtype"].isin(PRECISION_DTYPES)]
    if reduced.empty:
        section.status = "not run"
        section.notes.append("No float16 or bfloat16 rows in the store for this shape.")
        return section
    present = set(zip(reduced["activation"], reduced["init"], strict=True))
    configs = [c for c in PRECISION_CONFIGS if c in present] or sorted(present)[:5]
    modes = sorted(set(reduced["precision_mode"]))
    section.notes.append(
        f"Configuration: {_shape_label(reduced)}; precision: {', '.join(modes)} "
        "(emulated = float32 compute, rounded at every layer boundary)."
    )
    section.notes.append(
        "Configurations: the library default (relu, kaiming_normal) and four that stress the "
        "range: N(0, 1) weights (overflow), Xavier with tanh and with sigmoid (the sigmoid "
        "gradient vanishes into subnormals), and nn.Linear's own default (flush to zero)."
    )
    missing = [
        f"{a}/{i} {d}"
        for a, i in configs
        for d in PRECISION_DTYPES
        if (reduced[(reduced["activation"] == a) & (reduced["init"] == i)]["dtype"] == d).sum() == 0
    ]
    if missing:
        section.status = "partial"
        section.notes.append("Not run: " + ", ".join(missing) + ".")
    section.figures.append(
        _figure(
            data,
            "precision",
            [reduced[["activation", "init", "dtype", "seed", "layer", *_EVENT_COLUMNS]], configs],
            lambda: figures.precision_profiles(reduced, configs, PRECISION_DTYPES),
            "Per-layer fractions of overflow, subnormal and flushed values for a few "
            "configurations in float16 and bfloat16.",
            "Look for float16 overflowing where bfloat16 does not (range), and both flushing "
            "vanishing gradients to zero (the last layers of the backward pass are at the "
            "left). A curve on the floor is exactly 0.",
        )
    )
    chosen = reduced[
        [
            (a, i) in set(configs)
            for a, i in zip(reduced["activation"], reduced["init"], strict=True)
        ]
    ]
    summary = _event_summary(chosen)
    section.tables.append(
        Table("precision", "Largest per-layer fractions, selected configs", summary)
    )
    f16 = shape[shape["dtype"] == "float16"]
    if not f16.empty:
        section.tables.append(
            Table("precision-float16-all", "float16 across the whole sweep", _event_summary(f16))
        )
    return section


def _event_summary(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["activation", "init", "dtype", "precision_mode"]
    agg = rows.groupby(keys)[_EVENT_COLUMNS].max()
    agg.columns = [f"max {c.removesuffix('_frac').replace('_', ' ')}" for c in agg.columns]
    any_event = rows[_EVENT_COLUMNS].sum(axis=1) > 0
    first = rows[any_event].groupby(keys)["layer"].min().rename("first layer with an event")
    nonfinite = rows.groupby(keys)["nonfinite"].sum().rename("non-finite values")
    return agg.join(first).join(nonfinite).reset_index()


# -- 5. the notes' figures ---------------------------------------------------------------------
def notes_figures(data: ReportData) -> Section:
    section = Section(
        "notes",
        "5. The notes' figures, regenerated",
        "The course notes' illustrations, recomputed with torch (gradients from autograd).",
    )
    loss_panels = [(name, frame, "y' - y", "value") for name, frame in notes.loss_curves().items()]
    loss_styles = {
        "loss": {"color": figures.FORWARD_COLOR},
        "likelihood exp(-loss)": {"color": "#2e7d32"},
        "gradient": {"color": figures.BACKWARD_COLOR},
    }
    section.figures.append(
        _figure(
            data,
            "losses",
            [p[1] for p in loss_panels],
            lambda: figures.line_panels(loss_panels, styles=loss_styles),
            "L2, L1 and Huber loss against the residual, each with its likelihood exp(-loss) "
            "and its gradient.",
            "L2's gradient grows with the residual (large steps far from the target); L1's is "
            "a constant ±1 that jumps at 0 (unstable near the optimum); Huber is quadratic "
            "inside |r| < 1 and linear outside, so its gradient is the clipped residual.",
        )
    )
    taylor = notes.taylor_curves()

    def draw_taylor() -> MplFigure:
        fig = figures.line_panels(
            [(name, frame, "x", "value") for name, frame in taylor.items()],
            styles={"identity x": {"color": "#999999", "lw": 0.8, "ls": ":"}},
        )
        for ax in fig.axes:
            ax.set_ylim(-2.5, 2.5)
            for line in ax.get_lines()[1:2]:
                line.set_linestyle("--")
        return fig

    section.figures.append(
        _figure(
            data,
            "taylor",
            list(taylor.values()),
            draw_taylor,
            "tanh, sigmoid and scaled logistic beside their cubic Taylor polynomials at 0.",
            "Near 0, tanh and the scaled logistic 4·sigmoid(x) − 2 follow the identity "
            "(value 0, slope 1), which keeps variances stable; sigmoid is 1/2 + x/4 there: "
            "shifted and four times too flat.",
        )
    )
    sig = notes.sigmoid_gradient()

    def draw_sigmoid() -> MplFigure:
        fig = figures.line_panels(
            [
                ("sigmoid and its gradient", sig, "x", "value"),
                ("the gradient on a log scale", sig[["gradient"]], "x", "d sigmoid / dx"),
            ],
            height=2.6,
            styles={"gradient": {"color": figures.BACKWARD_COLOR}},
        )
        fig.axes[1].set_yscale("log")
        fig.axes[1].axhline(1e-3, color="#999999", lw=0.8, ls=":")
        return fig

    section.figures.append(
        _figure(
            data,
            "sigmoid",
            [sig],
            draw_sigmoid,
            "The sigmoid function and its derivative on [-8, 8].",
            "The gradient peaks at 1/4 at x = 0 and is below 1e-3 beyond |x| ≈ 7: a product "
            "of such factors over many layers vanishes.",
        )
    )
    products = notes.matrix_products()
    reference = {"d2l: about 1e24 after 100 factors": 24.0}
    final = products[products["factors"] == products["factors"].max()]
    section.figures.append(
        _figure(
            data,
            "matrix-products",
            [products, reference],
            lambda: figures.matrix_products(products, reference),
            "log10 of the largest entry of a product of random 4x4 matrices against the number "
            "of factors, several seeds, for N(0,1) and N(0,1/4) entries.",
            "With N(0, 1) entries the largest entry grows by orders of magnitude (the notes' "
            "example reaches about 1e24 after 100 factors); scaling the entries by 1/sqrt(n) "
            "keeps it within a few orders of magnitude.",
        )
    )
    section.tables.append(
        Table(
            "matrix-products",
            "log10 max |entry| after 100 factors, per seed",
            final.pivot(index="seed", columns="scale", values="log10_max_abs")
            .rename_axis(columns=None)
            .reset_index(),
        )
    )
    drop = notes.dropout_moments()
    by_p = drop.set_index("p")
    drop_panels = [
        ("mean", by_p[["mean (measured)", "mean (theory)", "mean without 1/(1-p)"]],
         "drop probability p", "mean"),
        ("variance", by_p[["variance (measured)", "variance (theory)"]],
         "drop probability p", "variance"),
    ]  # fmt: skip
    drop_styles = {
        "mean (theory)": {"ls": "--", "color": "black"},
        "variance (theory)": {"ls": "--", "color": "black"},
        "mean without 1/(1-p)": {"color": "#999999"},
    }
    section.figures.append(
        _figure(
            data,
            "dropout",
            [drop],
            lambda: figures.line_panels(drop_panels, styles=drop_styles),
            "Mean and variance of dropout(x) for x ~ N(1, 1) against the drop probability p.",
            "With the 1/(1-p) rescale the mean stays at E[x] = 1 for every p (unbiased), while "
            "the variance grows as (Var x + E[x]^2)/(1-p) − E[x]^2; without the rescale the "
            "mean shrinks to (1-p)·E[x].",
        )
    )
    section.tables.append(Table("dropout", "Dropout moments, x ~ N(1, 1), 200 000 values", drop))
    return section


# -- 6. properties -----------------------------------------------------------------------------
def properties(data: ReportData) -> Section:
    section = Section(
        "properties",
        "6. Properties",
        "Every hypothesis property of the suite with the chapter of the notes it checks, its "
        "result in the `ci` profile, the number of examples hypothesis ran, and the result of "
        "its witness (a known-bad variant on which the same check must fail; 'passed' means "
        "the check did catch it).",
    )
    run = data.properties
    if run is None:
        section.status = "not run"
        section.notes.append(
            "The property suite has not run: no junit XML in the cache or in results/. Run "
            "`stability report` without --no-run, or `nox -s properties`."
        )
        return section
    section.notes.append(f"Source: {run.source}.")
    if run.current is False:
        section.status = "partial"
        section.notes.append("This result is from older code than the checkout: re-run to refresh.")
    if run.exit_code not in (None, 0, 1, 5):
        section.status = "partial"
        section.failed = True
        section.notes.append(f"pytest exited {run.exit_code}: the results below are incomplete.")
    if not run.junit.exists():
        section.status = "not available"
        section.notes.append(f"No junit XML at {run.junit}.")
        return section
    cases = [c for c in read_junit(run.junit) if c.file.startswith("properties/")]
    table = property_table(cases, data.root)
    if table.empty:
        section.status = "not available"
        section.notes.append("The junit XML lists no property tests.")
        return section
    results = table["result"].value_counts()
    witnesses = table["witness"].value_counts()
    order = ["passed", "failed", "error", "skipped", "missing"]
    counted = ", ".join(f"{results[r]} {r}" for r in order if results.get(r, 0))
    witnessed = ", ".join(f"{witnesses[r]} {r}" for r in order if witnesses.get(r, 0))
    section.verdict = f"{len(table)} properties: {counted}; witnesses: {witnessed}"
    section.notes.append(section.verdict + ".")
    section.failed = section.failed or bool(results.get("failed", 0) + results.get("error", 0))
    if table["examples run"].isna().all():
        section.notes.append(
            "Examples run: not available (the junit XML carries no hypothesis statistics; "
            "run pytest with --hypothesis-show-statistics)."
        )
    chapters = (
        table.groupby("chapter")
        .agg(
            properties=("property", "size"),
            passed=("result", lambda r: int((r == "passed").sum())),
            witnessed=("witness", lambda r: int((r == "passed").sum())),
        )
        .reset_index()
    )
    section.tables.append(Table("properties-by-chapter", "By chapter", chapters))
    section.tables.append(Table("properties", "Every property", table, max_rows=1000))
    return section


# -- 7. throughput -----------------------------------------------------------------------------
GROUP_COLUMNS = ["kind", "shape", "dtype", "device", "precision_mode", "probe"]


def _latest_bench(data: ReportData) -> pd.DataFrame:
    bench = data.bench
    if bench.empty or "samples_per_s" not in bench.columns:
        return pd.DataFrame()
    latest: pd.DataFrame = bench[bench["run_id"] == bench["run_id"].max()]
    return latest


def throughput(data: ReportData) -> Section:
    section = Section(
        "throughput",
        "7. Throughput",
        "Training (or inference) steps of the probe MLP: samples per second against batch "
        "size, and efficiency = achieved GFLOP/s over the GFLOP/s of the same GEMM timed in "
        "the same process, which is what stays comparable on a noisy shared machine.",
    )
    bench = _latest_bench(data)
    if bench.empty:
        section.status = "not run"
        section.notes.append(
            "No benchmark results in the store: run `stability report` without --no-run, or "
            "`nox -s bench` and ingest its JSON."
        )
        return section
    run_id = int(bench["run_id"].iloc[0])
    section.notes.append(f"Benchmark run {run_id}; {len(bench)} results.")
    groups = [c for c in GROUP_COLUMNS if c in bench.columns and bench[c].nunique() > 1] or [
        "shape"
    ]
    section.figures.append(
        _figure(
            data,
            "throughput",
            [bench.drop(columns=["run_id"]).select_dtypes(include="number"), groups],
            lambda: figures.throughput(bench, groups),
            "Left: samples per second against batch size on log-log axes with interquartile "
            "bars. Right: efficiency against batch size.",
            "Throughput should rise with batch size until the matmuls saturate the cores, then "
            "flatten; efficiency near 1 means the step runs as fast as its bare GEMM. Wide "
            "bars mean a noisy machine: compare efficiencies, not raw speeds.",
        )
    )
    columns = [
        c for c in [*GROUP_COLUMNS, "name", "batch_size", "samples_per_s", "samples_per_s_q1",
                    "samples_per_s_q3", "gflops", "calib_gflops", "efficiency", "rel_iqr",
                    "threads", "torch_version"]
        if c in bench.columns
    ]  # fmt: skip
    section.tables.append(Table("throughput", "Latest benchmark results", bench[columns]))
    overhead = _probe_overhead(bench)
    if overhead.empty:
        section.notes.append("Probe overhead: not available (no benchmark with a probe attached).")
    else:
        section.tables.append(
            Table(
                "probe-overhead", "Probe overhead: step time with the probe over without", overhead
            )
        )
    return section


def _probe_overhead(bench: pd.DataFrame) -> pd.DataFrame:
    direct = [c for c in ("overhead_ratio", "probe_overhead", "overhead") if c in bench.columns]
    if direct:
        extra = [c for c in bench.columns if str(c).startswith("overhead") and c not in direct]
        keep = [c for c in ["name", "shape", "probe", "batch_size", *direct, *extra] if c in bench]
        return bench[bench[direct[0]].notna()][keep].reset_index(drop=True)
    if "probe" not in bench.columns or bench["probe"].nunique() < 2:
        return pd.DataFrame()
    keys = [c for c in ["kind", "shape", "dtype", "device", "batch_size"] if c in bench.columns]
    base = bench[bench["probe"] == "no probe"].groupby(keys)["samples_per_s"].median()
    out = []
    for (probe, *_), g in bench[bench["probe"] != "no probe"].groupby(["probe", *keys]):
        for _, row in g.iterrows():
            key = tuple(row[k] for k in keys)
            if key in base.index:
                out.append({
                    "probe": probe, **{k: row[k] for k in keys},
                    "slowdown (time with / without)": base[key] / row["samples_per_s"],
                })  # fmt: skip
    return pd.DataFrame(out)


# -- 8. gate -----------------------------------------------------------------------------------
GATE_WORDS = {
    gatekeeper.PASS: "PASS",
    gatekeeper.REGRESSION: "REGRESSION",
    gatekeeper.CANNOT_JUDGE: "CANNOT JUDGE",
}
GATE_EXITS = (
    "Exit codes of `stability gate`: 0 pass, 1 regression, 2 cannot judge (a missing, corrupt, "
    "partial or wrong-version baseline): it never passes by default. Throughput measured on "
    "another machine is shown as NOT JUDGED and does not fail the gate by itself."
)
REBASELINE = (
    "Create one on this machine with `stability baseline --reason '...'` (a few seconds) and "
    "commit baselines/baseline.json; `stability gate` then judges every commit against it."
)


def _baseline_facts(path: Path, base: dict[str, object]) -> pd.DataFrame:
    created = cast(dict[str, object], base.get("created") or {})
    stab = cast(dict[str, dict[str, object]], base["stability"])
    speed = cast(dict[str, object], base["throughput"])
    eff = [float(v) for v in cast(list[float], speed.get("efficiency") or [])]
    dtypes = sorted({str(c.get("dtype")) for c in stab.values()})
    facts = {
        "file": str(path),
        "written by": created.get("by"),
        "written at (UTC)": created.get("at"),
        "why": created.get("why"),
        "at commit": created.get("commit"),
        "stability grid": f"{len(stab)} cells ({', '.join(dtypes)}), per-layer "
        f"{', '.join(bl.FIGURES)}",
        "train-step efficiency": (
            f"median {float(np.median(eff)):.3g} over {len(eff)} rounds "
            f"(range {min(eff):.3g} to {max(eff):.3g})"
            if eff
            else "no samples"
        ),
    }
    return pd.DataFrame({"item": list(facts), "value": [str(v) for v in facts.values()]})


def gate(data: ReportData) -> Section:
    """The gate's verdict: stability figures compared now (0.2 s), throughput from the runner."""
    section = Section(
        "gate",
        "8. Gate",
        "The CI gate against the committed baseline. Stability figures: the per-layer variances "
        "of a fixed 12-cell CPU grid (float64 and float32, fixed seeds, one thread) are "
        "recomputed while drawing this page and compared on any machine with cross-machine "
        "tolerances (|now − base| ≤ rtol·|base|, rtol per dtype, see docs/figure-tolerances.md)"
        ". Throughput, only on the machine that wrote the baseline: the training "
        "step's efficiency against the baseline's rounds, a regression only if more than "
        f"{gatekeeper.EFFICIENCY_TOLERANCE:.0%} slower and significant (one-sided "
        f"Mann-Whitney U, p < {ALPHA}).",
    )
    section.notes.append(GATE_EXITS)
    path = data.root / bl.DEFAULT_PATH
    try:
        base = bl.load(path)
    except bl.CannotJudge as exc:
        missing = not path.exists()
        section.status = "not available"
        section.verdict = f"{GATE_WORDS[gatekeeper.CANNOT_JUDGE]} (exit 2): " + (
            "no baseline" if missing else "unusable baseline"
        )
        section.notes.append(f"No baseline at {path}." if missing else f"Cannot judge: {exc}.")
        section.notes.append(REBASELINE)
        return section
    verdict = gatekeeper.judge_baseline(path, throughput=False)
    rows = list(verdict.rows)
    code = verdict.code
    throughput = data.gate_throughput
    if code != gatekeeper.CANNOT_JUDGE and throughput is not None:
        rows.append(gatekeeper.Row(**throughput["row"]))
        if throughput["row"].get("verdict") == gatekeeper.NOT_JUDGED:
            section.notes.append(f"Throughput {throughput['row'].get('reason')}.")
        else:
            section.notes.append(
                f"Throughput measured by the report's runner at {throughput.get('finished')} "
                f"({throughput.get('rounds')} rounds, code {throughput.get('code')})."
            )
        if throughput.get("nonfinite_losses"):
            section.notes.append(f"{throughput['nonfinite_losses']} non-finite losses when timed.")
    elif code != gatekeeper.CANNOT_JUDGE:
        section.status = "partial"
        section.notes.append(
            "Throughput not judged in this report (rendered with --no-run, or nothing measured "
            "for this code and baseline): run `stability gate` or `nox -s gate`."
        )
    if code != gatekeeper.CANNOT_JUDGE:
        code = gatekeeper.Verdict(rows).code
    else:
        section.status = "not available"
        section.notes.append(REBASELINE)
    section.notes.extend(verdict.notes)
    moved = [r for r in rows if r.verdict != "ok"]
    timed = throughput is not None and throughput["row"].get("verdict") != gatekeeper.NOT_JUDGED
    judged = "stability figures" + (" and throughput" if timed else " only")
    section.verdict = (
        f"{GATE_WORDS[code]} (exit {code}): {len(moved)} of {len(rows)} checks not ok, {judged}"
    )
    section.failed = code == gatekeeper.REGRESSION
    frame = pd.DataFrame([dataclasses.asdict(r) for r in rows])
    if not frame.empty:
        # Not ok first, then throughput (one row), then the long list of equal figures.
        rank = (frame["verdict"] == "ok").astype(int) * 2 + (frame["check"] == "figures")
        frame = frame.iloc[np.argsort(rank.to_numpy(), kind="stable")]
    section.tables.append(
        Table(
            "gate",
            "What the gate compared, rows not ok first: 'change' is the relative move of a layer "
            "outside the tolerance (stability) or the ratio now / baseline (throughput)",
            frame,
        )
    )
    section.tables.append(
        Table(
            "gate-baseline", "The baseline: who wrote it, when and why", _baseline_facts(path, base)
        )
    )
    return section


# -- 9. divergence doctor ------------------------------------------------------------------------
DOCTOR_FIELDS = (
    ("shows", "shows"),
    ("config", "config"),
    ("status", "status"),
    ("step", "first non-finite at step"),
    ("where", "where"),
    ("phase", "phase"),
    ("kind", "kind"),
    ("mechanism", "mechanism"),
    ("op", "operator"),
    ("detail", "detail"),
    ("first_inf", "first inf"),
    ("first_nan", "first NaN"),
    ("grew_geometrically", "loss grew geometrically before"),
    ("losses", "loss, first → last"),
    ("advice", "advice"),
)
NO_DOCTOR = (
    "The store holds no doctor results: run `stability report` without --no-run (about 5 s "
    "for the default cases), or `stability doctor --lr-map`."
)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _text(v: object) -> str:
    if _missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _loss(v: object) -> str:
    """A loss that is NaN is a finding, not a missing value."""
    return f"{float(cast(float, v)):.4g}" if isinstance(v, int | float) else _text(v)


def _doctor_config(row: pd.Series) -> str:
    return (
        f"{row['activation']}/{row['init']}, depth {row['depth']}, width {row['width']}, "
        f"{row['dtype']}; {row['optimizer']} lr {float(row['lr']):g}, {row['steps']} steps, "
        f"{row['data']} data, batch {row['batch']}"
    )


def _diagnosis_card(rows: pd.DataFrame) -> pd.DataFrame:
    """One column per diagnosed run, one row per finding: three runs read side by side."""
    columns: dict[str, list[str]] = {"finding": [label for _, label in DOCTOR_FIELDS]}
    for i, (_, row) in enumerate(rows.iterrows()):
        values = {
            **{k: row.get(k) for k, _ in DOCTOR_FIELDS},
            "config": _doctor_config(row),
            "losses": f"{_loss(row.get('initial_loss'))} → {_loss(row.get('last_loss'))}",
        }
        name = row.get("case")
        columns[str(name) if not _missing(name) else f"run {row['run_id']} #{i + 1}"] = [
            _text(values.get(k)) for k, _ in DOCTOR_FIELDS
        ]
    return pd.DataFrame(columns)


def _run_command(data: ReportData, run_id: int) -> str:
    if data.runs.empty:
        return "unknown command"
    match = data.runs[data.runs["id"] == run_id]
    return str(match["command"].iloc[0]) if not match.empty else "unknown command"


def _report_runs(data: ReportData) -> set[int]:
    if data.runs.empty:
        return set()
    own = data.runs[data.runs["command"].astype(str).str.contains(MARKER, regex=False)]
    return {int(i) for i in own["id"]}


def doctor(data: ReportData) -> Section:
    section = Section(
        "doctor",
        "9. Divergence doctor",
        "Where NaN and inf come from and what fixes them (the notes: too large a learning rate "
        "or initial weights give inf, an invalid operation such as 0/0 or inf − inf gives NaN; "
        "lower the learning rate and the init variance until it trains). `stability doctor` "
        "trains briefly, watching every layer, and at the first non-finite value names the "
        "step, the layer, forward or backward, and the operator that made it.",
    )
    diag = data.doctor.get("diagnosis", pd.DataFrame())
    layers = data.doctor.get("layers", pd.DataFrame())
    lrs = data.doctor.get("lr_map", pd.DataFrame())
    if diag.empty and lrs.empty:
        section.status = "not run"
        section.notes.append(NO_DOCTOR)
        return section
    verdicts = []
    if lrs.empty:
        section.status = "partial"
        section.notes.append("No learning-rate map in the store: `stability doctor --lr-map`.")
    else:
        verdicts.append(_lr_map(data, section, lrs))
    if diag.empty:
        section.status = "partial"
        section.notes.append("No diagnosis in the store: `stability doctor`.")
    else:
        verdicts.append(_diagnoses(data, section, diag, layers))
    section.verdict = "; ".join(verdicts)
    return section


def _lr_map(data: ReportData, section: Section, lrs: pd.DataFrame) -> str:
    run_id = int(lrs["run_id"].max())
    table = lrs[lrs["run_id"] == run_id].assign(stable=lambda t: t["stable"].astype(bool))
    # trial_steps counts the steps a trial ran (a divergent one stops early): show the budget.
    budget = table["steps"] if "steps" in table.columns else table["trial_steps"]
    steps = ", ".join(str(s) for s in sorted(set(budget)))
    first = table.iloc[0]
    section.notes.append(
        f"Learning-rate map from run {run_id} ({_run_command(data, run_id)}): depth "
        f"{first['depth']}, width {first['width']}, {first['dtype']}, {first['optimizer']}, "
        f"{first['data']} data, {steps} steps per trial."
    )
    acts = list(dict.fromkeys(str(a) for a in table["activation"]))
    cols = ["activation", "init", "lr", "stable"]
    section.figures.append(
        _figure(
            data,
            "lr-map",
            [table[cols].reset_index(drop=True)],
            lambda: lr_map_figure(table),
            f"Stable or divergent training for each learning rate (log axis) and init (rows), "
            f"one panel per activation ({', '.join(acts)}): green squares stable, red crosses "
            f"divergent.",
            f"Green: {steps} steps of training ended with the loss below its start; red: a "
            "non-finite value or a loss that ended higher. Read each row left to right: its "
            "last green square is the largest stable learning rate on this grid. A row without "
            "a green square fails at every rate: there the initialisation is the problem, not "
            "the learning rate.",
        )
    )
    cells = table.assign(cell=np.where(table["stable"], "ok", "DIV"))
    grid = cells.pivot_table(
        index=["activation", "init"], columns="lr", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"lr {float(c):.3g}" for c in grid.columns]
    edge = table[table["stable"]].groupby(["activation", "init"], sort=False)["lr"].max()
    grid["largest stable lr tried"] = edge.reindex(grid.index)
    section.tables.append(
        Table("lr-map", "Stable (ok) or divergent (DIV) per learning rate", grid.reset_index())
    )
    section.tables.append(Table("lr-map-trials", "Every trial of the map", table, show=False))
    trains = int(edge.notna().sum())
    never = [f"{a}/{i}" for a, i in grid.index[grid["largest stable lr tried"].isna()]]
    if never:
        section.notes.append(f"Never stable on this grid: {', '.join(never)}.")
    return f"lr map: {trains} of {len(grid)} configs train at some lr"


def _diagnoses(data: ReportData, section: Section, diag: pd.DataFrame, layers: pd.DataFrame) -> str:
    own = _report_runs(data) & {int(i) for i in diag["run_id"]}
    shown_run = max(own) if own else int(diag["run_id"].max())
    shown = diag[diag["run_id"] == shown_run]
    section.notes.append(
        f"Diagnoses from run {shown_run} ({_run_command(data, shown_run)})"
        + (": the report's default cases, one stable, one overflow, one NaN." if own else ".")
    )
    section.tables.append(
        Table("doctor", "What the doctor found, one column per run", _diagnosis_card(shown),
              wrap=True)
    )  # fmt: skip
    if not layers.empty and "case" in layers.columns:
        failed = shown[shown["status"] != "stable"]["case"].astype(str).tolist()
        per_layer = layers[(layers["run_id"] == shown_run) & layers["case"].isin(failed)]
        stats = ("act_max_abs", "grad_max_abs", "weight_grad_max_abs", "weight_max_abs")
        keep = [c for c in ("case", "layer", "where", *stats) if c in per_layer.columns]
        if not per_layer.empty:
            section.tables.append(
                Table(
                    "doctor-layers",
                    "Last finite statistics per layer of the runs that diverged (max |x|)",
                    per_layer[keep],
                )
            )
    others = diag[diag["run_id"] != shown_run].sort_values("run_id", ascending=False)
    if not others.empty:
        brief = others.assign(config=others.apply(_doctor_config, axis=1))
        keep = [c for c in ("run_id", "config", "status", "step", "where", "phase", "kind",
                            "mechanism") if c in brief.columns]  # fmt: skip
        section.tables.append(
            Table("doctor-other", "Other diagnoses in the store, newest first", brief[keep],
                  max_rows=20)
        )  # fmt: skip
    counts = shown["status"].value_counts()
    return f"{len(shown)} runs diagnosed: " + ", ".join(f"{n} {k}" for k, n in counts.items())


# -- 9. history --------------------------------------------------------------------------------
def history(data: ReportData) -> Section:
    section = Section(
        "history",
        "10. History",
        "Every run in the store: benchmark efficiency (median per group) and, per sweep run, "
        "the share of its configurations that stay stable, explode, vanish or go non-finite.",
    )
    if data.runs.empty:
        section.status = "not run"
        section.notes.append("The store holds no runs yet.")
        return section
    efficiency = None
    bench = data.bench
    if not bench.empty and "efficiency" in bench.columns:
        groups = [c for c in ["kind", "shape", "dtype", "probe"] if c in bench.columns]
        labelled = bench.assign(group=bench[groups].astype(str).agg(" / ".join, axis=1))
        efficiency = labelled.pivot_table(
            index="run_id", columns="group", values="efficiency", aggfunc="median"
        )
        if efficiency.shape[1] > 8:  # keep the legend readable: the busiest groups
            top = labelled["group"].value_counts().index[:8]
            efficiency = efficiency[[c for c in efficiency.columns if c in set(top)]]
    stability = _verdicts_by_run(data.sweep_history)
    if (efficiency is None or efficiency.empty) and (stability is None or stability.empty):
        section.status = "partial"
        section.notes.append("No benchmark or sweep results across runs yet.")
    else:
        eff, stab = efficiency, stability
        section.figures.append(
            _figure(
                data,
                "history",
                [eff if eff is not None else "-", stab if stab is not None else "-"],
                lambda: figures.history(eff, stab),
                "Median efficiency per benchmark group across benchmark runs, and the share "
                "of stable, exploding, vanishing and non-finite configurations per sweep run.",
                "A drop in efficiency between runs on the same machine is a throughput "
                "regression. Sweep runs resume, so each covers the cells it computed; a "
                "change in the shares for the same cells means the numerics changed.",
            )
        )
        if efficiency is not None and len(efficiency) < 2:
            section.notes.append("Only one benchmark run so far: history starts here.")
    runs = data.runs.copy()
    if not data.sweep_history.empty:
        cells = data.sweep_history.groupby("run_id")["cell_key"].nunique().rename("sweep cells")
        runs = runs.merge(cells, how="left", left_on="id", right_index=True)
    if not bench.empty:
        counts = bench.groupby("run_id").size().rename("bench results")
        runs = runs.merge(counts, how="left", left_on="id", right_index=True)
    section.tables.append(
        Table("runs", "Runs in the store", runs.sort_values("id", ascending=False))
    )
    if stability is not None and not stability.empty:
        section.tables.append(
            Table(
                "stability-history",
                "Share of configurations per verdict, per sweep run",
                stability.reset_index(),
            )
        )
    return section


def _verdicts_by_run(rows: pd.DataFrame) -> pd.DataFrame | None:
    if rows.empty:
        return None
    out = {}
    for run_id, g in rows.groupby("run_id"):
        table = summary_table(g.drop(columns=["run_id"]))
        if table.empty:
            continue
        out[run_id] = table["verdict"].value_counts(normalize=True)
    if not out:
        return None
    frame = pd.DataFrame(out).T.fillna(0.0).sort_index()
    frame.index.name = "run_id"
    frame.columns.name = None
    order = [c for c in ("stable", "explodes", "vanishes", "non-finite") if c in frame.columns]
    return frame[order]


SECTIONS: list[Callable[[ReportData], Section]] = [
    environment,
    atlas,
    heatmap,
    precision,
    notes_figures,
    properties,
    throughput,
    gate,
    doctor,
    history,
]
