"""Apply a parameterisation to a built model: init, multipliers, per-group lr and Adam eps.

With ``m = width / base_width`` and ``m_L = depth / base_depth`` (base-relative, so the base
model is unchanged and its tuned lr carries over):

- ``sp``: PyTorch's default init, one global lr and eps.
- ``mup`` (Tensor Programs V, Table 8 form, with an output multiplier): output weights are
  multiplied by ``1/m`` and start at zero (the limit of Table 3's 1/fan_in^2 variance; App. D
  of the paper zero-initialises the readout); input and hidden weights keep a 1/fan_in
  variance (PyTorch's default is one). Adam: hidden lr ``x 1/m``, the rest unscaled; SGD:
  input, output and vector-like lr ``x m``, hidden unscaled. Adam's eps ``x 1/m`` wherever
  the gradient scales as 1/width (all but fixed-size tensors): an unscaled eps outweighs the
  shrinking gradients and turns Adam into SGD with too small a step.
- ``depth-mup`` / ``completep``: muP plus residual branches multiplied by ``m_L^-alpha``
  (alpha 1/2: Tensor Programs VI; alpha 1: CompleteP), the branch's last layer scaled
  (weight and bias, so the branch's output is). Parameters inside numbered blocks: Adam lr
  ``x m_L^(alpha-1)`` and eps ``x m_L^-alpha``; SGD lr ``x m_L^(2 alpha-1)``.

The multipliers are ``torch.nn.utils.parametrize`` scalings of the weight: the optimiser
steps the raw tensor, the forward sees the scaled one, the model's code is untouched.
``without`` drops named rules, which is how the witnesses build known-bad variants.
"""

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize as torch_parametrize

from stability.errors import StabilityError
from stability.scaling.exponents import ALPHA, check_param, family
from stability.scaling.roles import ParamRole, classify, module_roles

RULES = ("output-multiplier", "zero-readout", "hidden-lr", "lr", "eps", "branch-multiplier",
         "depth-lr")  # fmt: skip


class Scale(nn.Module):
    """``w -> c * w``: a multiplier the optimiser does not see."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.c


@dataclass
class Plan:
    """What ``parametrize`` did: the optimiser's groups, each parameter's role, and notes."""

    groups: list[dict[str, Any]]
    roles: list[ParamRole]
    notes: list[str] = field(default_factory=list)
    multipliers: dict[str, float] = field(default_factory=dict)

    @property
    def module_roles(self) -> dict[str, str]:
        return module_roles(self.roles)

    def optimizer(self, name: str, **kwargs: Any) -> torch.optim.Optimizer:
        """The optimiser over these groups (``adam``, ``adamw`` or ``sgd``)."""
        opt: dict[str, type[torch.optim.Optimizer]] = {
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "sgd": torch.optim.SGD,
        }
        family(name)
        made: torch.optim.Optimizer = opt[name](self.groups, **kwargs)
        return made


def check_rules(without: list[str] | tuple[str, ...]) -> frozenset[str]:
    bad = [r for r in without if r not in RULES]
    if bad:
        raise StabilityError(f"unknown rule {bad[0]!r} in --without; expected some of "
                             f"{sorted(RULES)}")  # fmt: skip
    return frozenset(without)


def parametrize(
    model: nn.Module,
    base_width: int,
    width: int,
    optimizer: str = "adam",
    lr: float = 1e-3,
    eps: float = 1e-8,
    param: str = "mup",
    reference: nn.Module | None = None,
    depth: int | None = None,
    base_depth: int | None = None,
    branches: list[str] | None = None,
    without: list[str] | tuple[str, ...] = (),
) -> Plan:
    """Apply ``param`` to ``model`` in place; return the optimiser's param groups and notes.

    ``reference``: the same model at another width (shapes tell width-like dimensions apart);
    ``branches``: globs naming each residual branch's last module (or the model's own
    ``residual_branches``), needed by depth-mup and completep."""
    param, fam, drop = check_param(param), family(optimizer), check_rules(without)
    if base_width < 1 or width < 1:
        raise StabilityError(f"widths must be >= 1, got width {width}, base {base_width}")
    roles, notes = classify(model, width, reference)
    plan = Plan([], roles, notes)
    params = dict(model.named_parameters())
    if param == "sp":
        plan.groups = [{"params": list(params.values()), "lr": lr, "eps": eps, "name": "all"}]
        return plan
    m = width / base_width
    alpha = ALPHA[param]
    m_l = 1.0
    if alpha > 0:
        if depth is None or base_depth is None:
            raise StabilityError(f"--param {param} needs a depth and a base depth")
        m_l = depth / base_depth
        _branch_multipliers(model, branches, m_l**-alpha, plan, "branch-multiplier" in drop)
    _output_multipliers(model, plan, m, drop)
    params = dict(model.named_parameters())  # the parametrised tensors' new names
    named = {_raw_name(n): p for n, p in params.items()}
    classified = {r.name for r in roles}
    for r in roles:
        lr_x, eps_x = _width_factors(r.role, fam, m, drop)
        if r.in_block and alpha > 0 and "depth-lr" not in drop and r.role in ("hidden", "vector"):
            lr_x *= m_l ** (alpha - 1) if fam == "adam" else m_l ** (2 * alpha - 1)
            eps_x *= m_l**-alpha if fam == "adam" else 1.0
        group = {"params": [named[r.name]], "lr": lr * lr_x, "name": r.name, "role": r.role}
        plan.groups.append(group | ({"eps": eps * eps_x} if fam == "adam" else {}))
    rest = [p for n, p in named.items() if n not in classified]
    if rest:
        plan.groups.append({"params": rest, "lr": lr, "name": "unclassified"}
                           | ({"eps": eps} if fam == "adam" else {}))  # fmt: skip
    return plan


def _raw_name(name: str) -> str:
    """``head.parametrizations.weight.original`` -> ``head.weight``."""
    if ".parametrizations." in f".{name}":
        head, _, tail = name.partition("parametrizations.")
        return head + tail.removesuffix(".original")
    return name


def _width_factors(role: str, fam: str, m: float, drop: frozenset[str]) -> tuple[float, float]:
    """(lr factor, eps factor) of one role under muP."""
    eps_x = 1.0 if role == "fixed" or "eps" in drop else 1.0 / m
    if "lr" in drop:
        return 1.0, eps_x
    if fam == "adam":
        lr_x = 1.0 / m if role == "hidden" and "hidden-lr" not in drop else 1.0
    else:
        lr_x = m if role in ("input", "output", "vector") else 1.0
    return lr_x, eps_x


def _output_multipliers(model: nn.Module, plan: Plan, m: float, drop: frozenset[str]) -> None:
    """Output weights: ``x 1/m`` in the forward, zero at the start (unless dropped)."""
    outputs = {r.name for r in plan.roles if r.role == "output"}
    for name in sorted(outputs):
        mname, _, pname = name.rpartition(".")
        mod = model.get_submodule(mname)
        if "zero-readout" not in drop:
            with torch.no_grad():
                getattr(mod, pname).zero_()
        if "output-multiplier" not in drop and m != 1.0:
            torch_parametrize.register_parametrization(mod, pname, Scale(1.0 / m))
            plan.multipliers[name] = 1.0 / m


def _branch_multipliers(
    model: nn.Module, globs: list[str] | None, c: float, plan: Plan, dropped: bool
) -> None:
    """Scale each residual branch's last module (its weight and bias) by ``c``."""
    globs = globs or list(getattr(model, "residual_branches", []) or [])
    if not globs:
        raise StabilityError("depth parameterisations need the residual branches: pass "
                             "--branches GLOBS (each branch's last module, e.g. "
                             "'layers.*.attn.out,layers.*.mlp.fc2')")  # fmt: skip
    found = [n for n, _ in model.named_modules() if any(fnmatch.fnmatch(n, g) for g in globs)]
    if not found:
        raise StabilityError(f"--branches {','.join(globs)!r} matches no module of the model")
    if dropped or c == 1.0:
        return
    for name in found:
        mod = model.get_submodule(name)
        for pname in ("weight", "bias"):
            if isinstance(getattr(mod, pname, None), nn.Parameter):
                torch_parametrize.register_parametrization(mod, pname, Scale(c))
                plan.multipliers[f"{name}.{pname}"] = c
