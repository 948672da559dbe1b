"""When masks are imposed, relative to training: one-shot, iterative, ADMM.

* ``oneshot``: masks from the current weights, then ``epochs`` of masked fine-tuning.
* ``iterative``: gradual magnitude pruning (Zhu & Gupta's cubic schedule) inside one
  training run. The pattern is imposed first with every kernel kept; the kept share of
  kernels then falls from 1 to each layer's target in many small steps over the first
  half of the epochs while training goes on, and the rest of the epochs fine-tune the
  final masks as the learning rate decays to 0. Each step's mask is computed from the
  weights trained so far, so the network gets to move weight into kernels that survive.
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
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .masks import deepcopy_model
from .plan import PrunePlan, apply_plan, screen_plan
from .train import TrainConfig, fit, recalibrate_batch_norm

__all__ = ["SCHEDULES", "Batches", "run_schedule", "gradual_keeps"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
SCHEDULES = ("oneshot", "iterative", "admm")


def default_finetune_config() -> TrainConfig:
    """Fine-tuning after pruning starts from a pretrained network: a small learning rate."""
    return TrainConfig(lr=0.01, progress=False)


def run_schedule(
    schedule: str, model: nn.Module, plan: PrunePlan, data: Batches | None, epochs: int,
    config: TrainConfig | None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` per ``plan`` under ``schedule`` (module docstring); final pattern ids."""
    config = default_finetune_config() if config is None else config
    if config.distill > 0 and config.teacher is None and data is not None:
        config = replace(config, teacher=frozen_copy(model))  # the dense net, before any mask
    if schedule == "oneshot":
        pattern_ids = apply_plan(plan)
        if data is not None and epochs:
            fit(model, data, replace(config, epochs=epochs, history=config.history), description="fine-tune")
    elif schedule == "iterative":
        pattern_ids = _iterative(model, plan, data, epochs, config)
    elif schedule == "admm":
        pattern_ids = _admm(model, plan, data, epochs, config)
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if data is not None:  # the pruned net's activations moved: fresh BatchNorm statistics
        recalibrate_batch_norm(model, data)
    return pattern_ids


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with gradients off (a distillation teacher)."""
    teacher = deepcopy_model(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _split_epochs(epochs: int) -> tuple[int, int]:
    """(epochs while pruning, epochs of final masked fine-tuning): about half each."""
    pruning = max(1, math.ceil(epochs / 2))
    return pruning, max(epochs - pruning, 1)


def gradual_keeps(target: float, steps: int) -> list[float]:
    """Kept shares after each of ``steps`` steps: cubic from 1 down to ``target`` (last == target)."""
    return [target + (1 - target) * (1 - s / steps) ** 3 for s in range(1, steps + 1)]


# Mask updates per epoch of the iterative ramp (when the data has a length).
UPDATES_PER_EPOCH = 8


def _iterative(model: nn.Module, plan: PrunePlan, data: Batches, epochs: int, config: TrainConfig) -> dict[str, torch.Tensor]:
    """One training run (one optimizer, one cosine LR decay over all ``epochs``): the pattern
    at once, then the kept share of kernels falls on the cubic schedule over the first half
    (a mask update every 1/UPDATES_PER_EPOCH epoch, or every epoch when ``data`` has no
    length), and the final masks train to the end of the decay."""
    screen_plan(plan)  # layers the final keeps would not speed up stay dense from the start
    targets = {name: plan.keeps[name] for name in plan.eligible}
    pruning_epochs, _ = _split_epochs(epochs)
    per_epoch = len(data) if hasattr(data, "__len__") else 0
    ramp = _KeepRamp(plan, targets, pruning_epochs, per_epoch)
    plan.keeps.update({name: 1.0 for name in targets})
    apply_plan(plan, check=False)  # the pattern first, every kernel kept
    fit(model, data, replace(config, epochs=epochs, history=config.history), description="iterative",
        on_step=ramp.on_step if ramp.interval else None,
        on_epoch_end=None if ramp.interval else lambda _epoch: ramp.tighten(), resumable=[ramp])
    plan.keeps.update(targets)
    return apply_plan(plan)  # the ramp already reached the targets: same masks, their pattern ids


class _KeepRamp:
    """The iterative schedule's mask updates: kept shares fall from 1 to each layer's
    target on :func:`gradual_keeps` over ``pruning_epochs``, one update every
    1/UPDATES_PER_EPOCH epoch (every epoch when the data has no length)."""

    def __init__(self, plan: PrunePlan, targets: dict[str, float], pruning_epochs: int, per_epoch: int) -> None:
        self.plan = plan
        self.interval = max(1, per_epoch // UPDATES_PER_EPOCH) if per_epoch else 0
        self.updates = pruning_epochs * (per_epoch // self.interval) if self.interval else pruning_epochs
        self.ramp = {name: gradual_keeps(keep, self.updates) for name, keep in targets.items()}
        self.done = self.steps = 0

    def tighten(self) -> None:
        if self.done < self.updates:
            self.plan.keeps.update({name: keeps[self.done] for name, keeps in self.ramp.items()})
            apply_plan(self.plan, check=False)
            self.done += 1

    def on_step(self) -> None:
        self.steps += 1
        if self.steps % self.interval == 0:
            self.tighten()

    def state_dict(self) -> dict[str, int]:
        return {"done": self.done, "steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Counters back; the masks themselves come back with the model's state."""
        self.done, self.steps = int(state["done"]), int(state["steps"])
        if self.done:
            self.plan.keeps.update({name: keeps[self.done - 1] for name, keeps in self.ramp.items()})


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

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "z": dict(self.z), "u": dict(self.u)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rho = float(state["rho"])
        self.z, self.u = dict(state["z"]), dict(state["u"])

    def distance(self) -> float:
        """How far W is from the sparsity set: sum ||W - proj(W)||^2 / sum ||W||^2."""
        num = den = 0.0
        for name in self.z:
            weight = self.plan.layers[name].weight.detach()
            num += float((weight - self.project(name, weight)).square().sum())
            den += float(weight.square().sum())
        return num / max(den, 1e-30)


def _admm(model: nn.Module, plan: PrunePlan, data: Batches, epochs: int, config: TrainConfig) -> dict[str, torch.Tensor]:
    """ADMM for about half the epochs at a constant LR (Z, U and rho updated after each
    epoch; a decaying LR would weaken the pull of the growing rho), hard prune, then masked
    retraining with a cosine decay."""
    admm_epochs, retrain_epochs = _split_epochs(epochs)
    rho_start, rho_end = config.admm_rho
    state = AdmmState(plan, rho_start)
    growth = (rho_end / rho_start) ** (1 / max(admm_epochs - 1, 1))
    config.history.append({"admm_epoch": 0, "rho": 0.0, "distance": state.distance()})

    def epoch_end(epoch: int) -> None:
        state.update()
        config.history.append({"admm_epoch": epoch + 1, "rho": state.rho, "distance": state.distance()})
        state.rho *= growth

    fit(model, data, replace(config, epochs=admm_epochs, lr_schedule="constant", history=config.history),
        penalty=state.penalty, on_epoch_end=epoch_end, description="admm", resumable=[state])
    pattern_ids = apply_plan(plan)  # hard prune: W projected onto S
    fit(model, data, replace(config, epochs=retrain_epochs, history=config.history), description="retrain")
    return pattern_ids
