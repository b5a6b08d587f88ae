"""5. The notes' figures: the course notes' illustrations, drawn from computed curves.

The curves come from ``stability.notes.curves`` through ``ReportData.notes``; this module
only draws them and shapes the two tables.
"""

from matplotlib.figure import Figure as MplFigure

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table

TITLE = "5. The notes' figures, regenerated"
INTRO = "The course notes' illustrations, recomputed with torch (gradients from autograd)."
NO_CURVES = "The notes' curves were not computed for this page."
LOSSES_ALT = (
    "L2, L1 and Huber loss against the residual, each with its likelihood exp(-loss) "
    "and its gradient."
)
LOSSES_CAPTION = (
    "L2's gradient grows with the residual (large steps far from the target); L1's is "
    "a constant ±1 that jumps at 0 (unstable near the optimum); Huber is quadratic "
    "inside |r| < 1 and linear outside, so its gradient is the clipped residual."
)
TAYLOR_ALT = "tanh, sigmoid and scaled logistic beside their cubic Taylor polynomials at 0."
TAYLOR_CAPTION = (
    "Near 0, tanh and the scaled logistic 4·sigmoid(x) − 2 follow the identity "
    "(value 0, slope 1), which keeps variances stable; sigmoid is 1/2 + x/4 there: "
    "shifted and four times too flat."
)
SIGMOID_ALT = "The sigmoid function and its derivative on [-8, 8]."
SIGMOID_CAPTION = (
    "The gradient peaks at 1/4 at x = 0 and is below 1e-3 beyond |x| ≈ 7: a product "
    "of such factors over many layers vanishes."
)
PRODUCTS_ALT = (
    "log10 of the largest entry of a product of random 4x4 matrices against the number "
    "of factors, several seeds, for N(0,1) and N(0,1/4) entries."
)
PRODUCTS_CAPTION = (
    "With N(0, 1) entries the largest entry grows by orders of magnitude (the notes' "
    "example reaches about 1e24 after 100 factors); scaling the entries by 1/sqrt(n) "
    "keeps it within a few orders of magnitude."
)
PRODUCTS_TABLE = "log10 max |entry| after 100 factors, per seed"
PRODUCTS_REFERENCE = {"d2l: about 1e24 after 100 factors": 24.0}
DROPOUT_ALT = "Mean and variance of dropout(x) for x ~ N(1, 1) against the drop probability p."
DROPOUT_CAPTION = (
    "With the 1/(1-p) rescale the mean stays at E[x] = 1 for every p (unbiased), while "
    "the variance grows as (Var x + E[x]^2)/(1-p) − E[x]^2; without the rescale the "
    "mean shrinks to (1-p)·E[x]."
)
DROPOUT_TABLE = "Dropout moments, x ~ N(1, 1), 200 000 values"


def notes_figures(data: ReportData) -> Section:
    section = Section("notes", TITLE, INTRO)
    curves = data.notes
    if curves is None:
        section.status = "not available"
        section.notes.append(NO_CURVES)
        return section
    loss_panels = [(name, frame, "y' - y", "value") for name, frame in curves.losses.items()]
    loss_styles = {
        "loss": {"color": figures.FORWARD_COLOR},
        "likelihood exp(-loss)": {"color": "#2e7d32"},
        "gradient": {"color": figures.BACKWARD_COLOR},
    }
    section.figures.append(
        cached_figure(
            data,
            "losses",
            [p[1] for p in loss_panels],
            lambda: figures.line_panels(loss_panels, styles=loss_styles),
            LOSSES_ALT,
            LOSSES_CAPTION,
        )
    )
    taylor = curves.taylor

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
        cached_figure(data, "taylor", list(taylor.values()), draw_taylor, TAYLOR_ALT,
                      TAYLOR_CAPTION)
    )  # fmt: skip
    sig = curves.sigmoid

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
        cached_figure(data, "sigmoid", [sig], draw_sigmoid, SIGMOID_ALT, SIGMOID_CAPTION)
    )
    products = curves.matrix_products
    reference = PRODUCTS_REFERENCE
    final = products[products["factors"] == products["factors"].max()]
    section.figures.append(
        cached_figure(
            data,
            "matrix-products",
            [products, reference],
            lambda: figures.matrix_products(products, reference),
            PRODUCTS_ALT,
            PRODUCTS_CAPTION,
        )
    )
    section.tables.append(
        Table(
            "matrix-products",
            PRODUCTS_TABLE,
            final.pivot(index="seed", columns="scale", values="log10_max_abs")
            .rename_axis(columns=None)
            .reset_index(),
            open=False,  # the numbers behind the figure: one click away
        )
    )
    drop = curves.dropout
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
        cached_figure(
            data,
            "dropout",
            [drop],
            lambda: figures.line_panels(drop_panels, styles=drop_styles),
            DROPOUT_ALT,
            DROPOUT_CAPTION,
        )
    )
    section.tables.append(Table("dropout", DROPOUT_TABLE, drop, open=False))
    section.judge("pass", f"{len(section.figures)} figures of the notes recomputed")
    return section
