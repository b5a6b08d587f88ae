"""The loss scaler when disabled is a no-op, so the trainer can always hold one.

Each check runs on a disabled scaler (must pass) and on an enabled one (the witness: the
same check must find the scaling, the skipped step and the changed scale).
"""

import math

import torch
from torch import nn

from stability.core.config import MLPConfig
from stability.train.scaler import INIT_SCALE, LossScaler
from stability.train.trainer import TrainConfig, Trainer

BAD_STEPS = [False, True, False, True, False]  # steps whose gradients we make infinite


def _model() -> tuple[nn.Linear, torch.optim.Optimizer, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 4, generator=gen))
        model.bias.zero_()
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(8, 4, generator=gen)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def no_op_violations(scaler: LossScaler) -> set[str]:
    """Which no-op promises ``scaler`` breaks over ``BAD_STEPS`` (empty: a perfect no-op)."""
    broken: set[str] = set()
    for bad in BAD_STEPS:
        model, opt, x = _model()  # fresh finite weights: a step is seen by whether they move
        loss = model(x).square().mean()
        (plain,) = torch.autograd.grad(loss, model.weight, retain_graph=True)
        scaled = scaler.scale(loss)
        if scaled is not loss:
            broken.add("loss scaled")
        scaled.backward()  # type: ignore[no-untyped-call]
        assert model.weight.grad is not None
        if not torch.equal(model.weight.grad, plain):
            broken.add("gradients scaled")
        if bad:
            model.weight.grad[0, 0] = math.inf
        grads = _grads(model)
        before = model.weight.detach().clone()
        scaler.step(opt)
        scaler.update()
        if any(not torch.equal(g, h) for g, h in zip(grads, _grads(model), strict=True)):
            broken.add("gradients changed by step")
        if torch.equal(model.weight, before):
            broken.add("step skipped")
        if scaler.get_scale() != 1.0:
            broken.add("scale not 1")
    return broken


def test_disabled_scaler_is_a_no_op() -> None:
    scaler = LossScaler(enabled=False)
    assert not scaler.is_enabled()
    assert no_op_violations(scaler) == set()
    assert scaler.get_scale() == 1.0


def test_witness_enabled_scaler_is_not_a_no_op() -> None:
    """The same check finds everything an enabled scaler does differently."""
    scaler = LossScaler(growth_interval=1)
    assert scaler.is_enabled()
    assert no_op_violations(scaler) == {
        "loss scaled",
        "gradients scaled",
        "gradients changed by step",  # unscaled in place
        "step skipped",  # the steps with an inf gradient
        "scale not 1",
    }
    # Growth interval 1: doubled after each of the 3 clean steps, halved after the 2 inf ones.
    assert scaler.get_scale() == INIT_SCALE * 2**3 * 0.5**2


def _float16_trainer(loss_scaling: bool) -> Trainer:
    model = MLPConfig(depth=3, width=8, dtype="float16", init="standard_normal")
    cfg = TrainConfig(model, lr=10.0, steps=6, batch=8, samples=64, loss_scaling=loss_scaling)
    return Trainer(cfg)


def _applied(trainer: Trainer) -> list[bool]:
    """Train every step; whether each update was applied."""
    out = []
    for step in range(trainer.cfg.steps):
        trainer.compute(step)
        out.append(trainer.apply())
    return out


def test_trainer_without_loss_scaling_holds_a_disabled_scaler() -> None:
    """Scale 1 and every step applied, also once the float16 gradients overflow."""
    trainer = _float16_trainer(loss_scaling=False)
    assert not trainer.scaler.is_enabled()
    applied = _applied(trainer)
    assert applied == [True] * 6
    assert (trainer.skipped_steps, trainer.scaler.get_scale()) == (0, 1.0)


def test_witness_trainer_with_loss_scaling_skips_and_backs_off() -> None:
    trainer = _float16_trainer(loss_scaling=True)
    assert trainer.scaler.is_enabled()
    applied = _applied(trainer)
    assert False in applied
    assert trainer.skipped_steps == applied.count(False) > 0
    assert trainer.scaler.get_scale() < INIT_SCALE


def test_old_import_path_is_the_same_scaler() -> None:
    """``stability.train.loss_scaling.LossScaler`` still names the mechanism."""
    from stability.train.loss_scaling import LossScaler as Old

    assert Old is LossScaler
