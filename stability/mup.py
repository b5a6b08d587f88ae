"""``stability.mup.parametrize``: muP (and Depth-muP, CompleteP) for your own model.

    import torch
    from stability.mup import parametrize

    with torch.device("meta"):
        reference = build(width=2048)  # shapes only: which dimensions grow with width
    model = build(width=1024)
    plan = parametrize(model, base_width=256, width=1024, optimizer="adam", lr=3e-3,
                       reference=reference)
    opt = plan.optimizer("adam")   # per-group lr and eps
    print(plan.notes)              # what it could not classify

Linear, Embedding, LayerNorm/RMSNorm/GroupNorm and nn.MultiheadAttention parameters are
classified as input, hidden, output, vector-like or fixed (``stability.scaling.roles``);
anything else is left at the global lr and named in ``plan.notes``. The rules and their
sources are in ``stability.scaling.parametrize`` and docs/scaling.md.
"""

from stability.scaling.parametrize import RULES, Plan, parametrize
from stability.scaling.roles import ParamRole, classify

__all__ = ["RULES", "ParamRole", "Plan", "classify", "parametrize"]
