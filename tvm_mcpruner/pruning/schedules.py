"""When masks are imposed, relative to training: one-shot, iterative, ADMM.

* ``oneshot``: masks from the current weights, then ``epochs`` of masked fine-tuning.
* ``iterative``: gradual magnitude pruning (Zhu & Gupta's cubic schedule). The pattern
  is imposed first with every kernel kept; the kept share of kernels then falls from
  1 to each layer's target over a few steps, with fine-tuning after each step, and the
  rest of the epochs fine-tune the final masks. Each step's mask is computed from the
  fine-tuned weights, so the network gets to move weight into kernels that survive.
* ``admm``: PatDNN's extended ADMM. Pruning is the constraint ``W in S`` (S = the
  aligned pattern + connectivity set of the plan); ADMM splits it as ``W = Z`` with
  ``Z in S``, and alternates (a) SGD on ``loss(W) + rho/2 ||W - Z + U||^2``, (b)
  ``Z = proj_S(W + U)`` (the Euclidean projection onto S is exactly the aligned mask of
  ``W + U``: keep the taps and kernels of largest magnitude), (c) ``U += W - Z``, with
  ``rho`` growing so W is pulled ever closer to S. Then W is hard-pruned to
  ``proj_S(W)`` and retrained with the masks held.

Every schedule ends with the plan's final masks applied and returns their pattern ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from .train import TrainConfig, fit, recalibrate_batch_norm

if TYPE_CHECKING:
    from torch import nn

    from .api import PrunePlan

__all__ = ["SCHEDULES", "Batches", "run_schedule", "gradual_keeps"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ApplyPlan = Callable[["PrunePlan"], dict[str, torch.Tensor]]
SCHEDULES = ("oneshot", "iterative", "admm")


def default_finetune_config() -> TrainConfig:
    """Fine-tuning after pruning starts from a pretrained network: a small learning rate."""
    return TrainConfig(lr=0.01, progress=False)


def run_schedule(
    schedule: str, model: nn.Module, plan: PrunePlan, apply_plan: ApplyPlan,
    data: Batches | None, epochs: int, config: TrainConfig | None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` per ``plan`` under ``schedule`` (module docstring); final pattern ids."""
    config = default_finetune_config() if config is None else config
    if schedule == "oneshot":
        pattern_ids = apply_plan(plan)
        if data is not None and epochs:
            fit(model, data, replace(config, epochs=epochs, history=config.history), description="fine-tune")
    elif schedule == "iterative":
        pattern_ids = _iterative(model, plan, apply_plan, data, epochs, config)
    elif schedule == "admm":
        pattern_ids = _admm(model, plan, apply_plan, data, epochs, config)
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if data is not None:  # the pruned net's activations moved: fresh BatchNorm statistics
        recalibrate_batch_norm(model, data)
    return pattern_ids


def _split_epochs(epochs: int) -> tuple[int, int]:
    """(epochs while pruning, epochs of final masked fine-tuning): about half each."""
    pruning = max(1, math.ceil(epochs / 2))
    return pruning, max(epochs - pruning, 1)


def gradual_keeps(target: float, steps: int) -> list[float]:
    """Kept shares after each of ``steps`` steps: cubic from 1 down to ``target`` (last == target)."""
    return [target + (1 - target) * (1 - s / steps) ** 3 for s in range(1, steps + 1)]


def _iterative(model: nn.Module, plan: PrunePlan, apply_plan: ApplyPlan, data: Batches, epochs: int,
               config: TrainConfig) -> dict[str, torch.Tensor]:
    pruning_epochs, final_epochs = _split_epochs(epochs)
    steps = pruning_epochs
    targets = dict(plan.keeps)
    schedule = {name: gradual_keeps(keep, steps) for name, keep in targets.items()}
    for step in range(steps):
        plan.keeps.update({name: keeps[step] for name, keeps in schedule.items()})
        apply_plan(plan)
        fit(model, data, replace(config, epochs=1, history=config.history), description=f"iterative {step + 1}/{steps}")
    plan.keeps.update(targets)
    pattern_ids = apply_plan(plan)  # the last step already reached the targets: same masks
    fit(model, data, replace(config, epochs=final_epochs, history=config.history), description="fine-tune")
    return pattern_ids


class AdmmState:
    """Z (projections) and U (scaled duals) per pruned layer, and the penalty they define."""

    def __init__(self, plan: PrunePlan, rho: float) -> None:
        self.plan = plan
        self.rho = rho
        self.z: dict[str, torch.Tensor] = {}
        self.u: dict[str, torch.Tensor] = {}
        for name in plan.eligible:
            weight = plan.layers[name].weight.detach()
            self.z[name] = self.project(name, weight)
            self.u[name] = torch.zeros_like(weight)

    def project(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        mask, _ = self.plan.mask(name, weight)
        return weight * mask

    def penalty(self, _model: nn.Module) -> torch.Tensor:
        total = torch.zeros(())
        for name in self.z:
            total = total + (self.plan.layers[name].weight - self.z[name] + self.u[name]).square().sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def update(self) -> None:
        """Z = proj(W + U); U += W - Z."""
        for name in self.z:
            weight = self.plan.layers[name].weight.detach()
            self.z[name] = self.project(name, weight + self.u[name])
            self.u[name] += weight - self.z[name]

    def distance(self) -> float:
        """How far W is from the sparsity set: sum ||W - proj(W)||^2 / sum ||W||^2."""
        num = den = 0.0
        for name in self.z:
            weight = self.plan.layers[name].weight.detach()
            num += float((weight - self.project(name, weight)).square().sum())
            den += float(weight.square().sum())
        return num / max(den, 1e-30)


def _admm(model: nn.Module, plan: PrunePlan, apply_plan: ApplyPlan, data: Batches, epochs: int,
          config: TrainConfig) -> dict[str, torch.Tensor]:
    admm_epochs, retrain_epochs = _split_epochs(epochs)
    rho_start, rho_end = config.admm_rho
    state = AdmmState(plan, rho_start)
    growth = (rho_end / rho_start) ** (1 / max(admm_epochs - 1, 1))
    config.history.append({"admm_epoch": 0, "rho": 0.0, "distance": state.distance()})
    for epoch in range(admm_epochs):
        fit(model, data, replace(config, epochs=1, history=config.history), penalty=state.penalty,
            description=f"admm {epoch + 1}/{admm_epochs} rho={state.rho:.0e}")
        state.update()
        config.history.append({"admm_epoch": epoch + 1, "rho": state.rho, "distance": state.distance()})
        state.rho *= growth
    pattern_ids = apply_plan(plan)  # hard prune: W projected onto S
    fit(model, data, replace(config, epochs=retrain_epochs, history=config.history), description="retrain")
    return pattern_ids
