"""Which parameters scale with width: input, hidden, output or vector-like (Tensor Programs V).

A dimension is *width-like* when it changes between the model and a reference built at another
width (shapes compared, as ``mup``'s base shapes do), else *fixed* (vocabulary, data, classes).
A matrix maps fixed -> width (input weights, embeddings), width -> width (hidden) or
width -> fixed (output); a tensor with one width-like dimension (a bias, a LayerNorm gain) is
vector-like; one with none is fixed and needs no rule. Without a reference a dimension is
width-like when it is a multiple of ``width``: ambiguous when, say, the vocabulary equals the
width, so the notes say so.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

ATTENTION = (nn.MultiheadAttention,)
NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
BLOCK = re.compile(r"(^|\.)\d+(\.|$)")  # inside a numbered block of a ModuleList/Sequential


@dataclass(frozen=True)
class ParamRole:
    """One parameter: its qualified name, role, and whether it sits inside a numbered block."""

    name: str
    module: str
    role: str
    in_block: bool
    fan_in: int


def own_parameters(module: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    """A module's own parameters, including those torch.nn.utils.parametrize moved aside."""
    for name, p in module.named_parameters():
        if "." not in name:
            yield name, p
        elif name.startswith("parametrizations.") and name.endswith(".original"):
            yield name.split(".")[1], p


def _width_like(size: int, ref: int | None, width: int) -> bool:
    if ref is not None:
        return size != ref
    return size % width == 0


def classify(
    model: nn.Module, width: int, reference: nn.Module | None = None
) -> tuple[list[ParamRole], list[str]]:
    """Every parameter's role, and notes naming what could not be classified."""
    ref_shapes: dict[str, tuple[int, ...]] = {}
    if reference is not None:
        for mname, mod in reference.named_modules():
            for pname, p in own_parameters(mod):
                ref_shapes[f"{mname}.{pname}".lstrip(".")] = tuple(p.shape)
    roles: list[ParamRole] = []
    notes: list[str] = []
    ambiguous: set[int] = set()
    for mname, mod in model.named_modules():
        if ".parametrizations" in f".{mname}" or mname.startswith("parametrizations"):
            continue
        for pname, p in own_parameters(mod):
            full = f"{mname}.{pname}".lstrip(".")
            shape = tuple(p.shape)
            ref = ref_shapes.get(full)
            if reference is not None and (ref is None or len(ref) != len(shape)):
                notes.append(f"{full}: absent from the reference model, left unscaled")
                continue
            inf = [_width_like(s, None if ref is None else ref[i], width)
                   for i, s in enumerate(shape)]  # fmt: skip
            if reference is None:
                ambiguous.update(s for s, w in zip(shape, inf, strict=True) if w and s != width)
            role = _role(mod, pname, shape, inf)
            if role is None:
                notes.append(f"{full} ({type(mod).__name__}, {list(shape)}): not classified, "
                             "left at the global lr")  # fmt: skip
                continue
            fan_in = int(shape[1]) if len(shape) == 2 and not isinstance(mod, nn.Embedding) else 1
            roles.append(ParamRole(full, mname, role, bool(BLOCK.search(mname)), fan_in))
    if ambiguous:
        notes.append(f"no reference model: sizes {sorted(ambiguous)} taken as width-like "
                     "(multiples of the width); pass reference= to be sure")  # fmt: skip
    return roles, notes


def _role(mod: nn.Module, pname: str, shape: tuple[int, ...], inf: list[bool]) -> str | None:
    """input, hidden, output, vector or fixed; None for a module this does not know."""
    known = isinstance(mod, (nn.Linear, nn.Embedding, *NORMS, *ATTENTION))
    if not known:
        return None
    if not any(inf):
        return "fixed"
    if len(shape) == 1:
        return "vector"
    if len(shape) != 2:
        return None
    if isinstance(mod, nn.Embedding):  # (num, dim): a lookup is an input weight
        return "input" if inf[1] and not inf[0] else None
    out_inf, in_inf = inf
    if out_inf and in_inf:
        return "hidden"
    return "input" if out_inf else "output"


def module_roles(roles: list[ParamRole]) -> dict[str, str]:
    """A module's role: its weight's (else its first parameter's)."""
    found: dict[str, str] = {}
    for r in roles:
        if r.name.endswith(".weight") or r.name == "weight" or r.module not in found:
            found[r.module] = r.role
    return found
