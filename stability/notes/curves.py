"""The course notes' curves, recomputed with torch: pure functions returning DataFrames.

The report draws them but computes nothing itself, so the numbers live here, beside the
notes' reference code. Gradients come from autograd (not from the closed forms), so the
plots show what torch computes. Random draws use their own seeded generators: the curves
are reproducible and leave the global RNG alone.
"""

import math
from collections.abc import Callable

import pandas as pd
import torch

from stability.core.activations import activation_fn, get_activation
from stability.notes import losses

LOSS_RANGE = 2.0  # y' - y from -2 to 2, the notes' plotting window
TAYLOR_RANGE = 3.0
SIGMOID_RANGE = 8.0
MATRIX_SIZE = 4
MATRIX_FACTORS = 100
MATRIX_SEEDS = 5
DROPOUT_ELEMENTS = 200_000
DROPOUT_MEAN = 1.0
DROPOUT_VAR = 1.0
TAYLOR_ACTIVATIONS = ("tanh", "sigmoid", "scaled_logistic")


def _losses() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    zero = torch.zeros(())
    return {
        "L2": lambda r: losses.l2_loss(r, zero),
        "L1": lambda r: losses.l1_loss(r, zero),
        "Huber": lambda r: losses.huber_loss(r),
    }


def loss_curves(points: int = 401) -> dict[str, pd.DataFrame]:
    """Per loss: the loss of the residual y' - y, its likelihood exp(-l), and d l / d y'."""
    out = {}
    for name, fn in _losses().items():
        r = torch.linspace(-LOSS_RANGE, LOSS_RANGE, points, dtype=torch.float64, requires_grad=True)
        loss = fn(r)
        (grad,) = torch.autograd.grad(loss.sum(), r)
        out[name] = pd.DataFrame(
            {
                "loss": loss.detach().numpy(),
                "likelihood exp(-loss)": torch.exp(-loss.detach()).numpy(),
                "gradient": grad.numpy(),
            },
            index=pd.Index(r.detach().numpy(), name="y' - y"),
        )
    return out


def taylor_curves(points: int = 301) -> dict[str, pd.DataFrame]:
    """Each smooth activation beside its cubic Taylor polynomial at 0 (from the registry)."""
    x = torch.linspace(-TAYLOR_RANGE, TAYLOR_RANGE, points, dtype=torch.float64)
    out = {}
    for name in TAYLOR_ACTIVATIONS:
        act = get_activation(name)
        cubic = act.cubic_at_0 or 0.0
        poly = act.value_at_0 + act.slope_at_0 * x + cubic * x**3
        out[name] = pd.DataFrame(
            {
                name: activation_fn(name)(x).numpy(),
                f"{act.value_at_0:g} + {act.slope_at_0:g} x + ({cubic:.4g}) x^3": poly.numpy(),
                "identity x": x.numpy(),
            },
            index=pd.Index(x.numpy(), name="x"),
        )
    return out


def sigmoid_gradient(points: int = 401) -> pd.DataFrame:
    """sigmoid(x) and its autograd derivative: at most 1/4, under 1e-3 beyond |x| ~ 7."""
    x = torch.linspace(
        -SIGMOID_RANGE, SIGMOID_RANGE, points, dtype=torch.float64, requires_grad=True
    )
    y = torch.sigmoid(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    return pd.DataFrame(
        {"sigmoid": y.detach().numpy(), "gradient": grad.numpy()},
        index=pd.Index(x.detach().numpy(), name="x"),
    )


def matrix_products() -> pd.DataFrame:
    """log10 max |entry| of M_1 M_2 ... M_k for 4x4 Gaussian matrices, per seed and scale."""
    rows = []
    for scale, std in (("N(0, 1)", 1.0), ("N(0, 1/n)", 1.0 / math.sqrt(MATRIX_SIZE))):
        for seed in range(MATRIX_SEEDS):
            gen = torch.Generator().manual_seed(seed)
            m = torch.eye(MATRIX_SIZE, dtype=torch.float64)
            for k in range(1, MATRIX_FACTORS + 1):
                factor = torch.randn(MATRIX_SIZE, MATRIX_SIZE, generator=gen, dtype=torch.float64)
                m = m @ (factor * std)
                rows.append(
                    {
                        "scale": scale,
                        "seed": seed,
                        "factors": k,
                        "log10_max_abs": math.log10(float(m.abs().max())),
                    }
                )
    return pd.DataFrame(rows)


def dropout_moments(
    ps: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
) -> pd.DataFrame:
    """Mean and variance of dropout(x), x ~ N(1, 1), against p; theory and the unscaled witness.

    With the 1/(1-p) rescale E[h'] = E[h] and Var[h'] = (Var h + E[h]^2) / (1 - p) - E[h]^2;
    dropping without the rescale shrinks the mean to (1-p) E[h].
    """
    gen = torch.Generator().manual_seed(0)
    x = DROPOUT_MEAN + math.sqrt(DROPOUT_VAR) * torch.randn(
        DROPOUT_ELEMENTS, generator=gen, dtype=torch.float64
    )
    rows = []
    for i, p in enumerate(ps):
        with torch.random.fork_rng(devices=[]):  # torch's dropout draws from the global RNG
            torch.manual_seed(i)
            scaled = torch.nn.functional.dropout(x, p, training=True)
        rows.append(
            {
                "p": p,
                "mean (measured)": float(scaled.mean()),
                "mean (theory)": DROPOUT_MEAN,
                "mean without 1/(1-p)": float((scaled * (1.0 - p)).mean()),
                "variance (measured)": float(scaled.var()),
                "variance (theory)": (DROPOUT_VAR + DROPOUT_MEAN**2) / (1.0 - p) - DROPOUT_MEAN**2,
            }
        )
    return pd.DataFrame(rows)
