"""Training, masked fine-tuning and evaluation loops (torch only, tqdm progress).

Pruned tensors are ``orig * mask`` reparametrizations (see :mod:`.masks`), so the
gradient of a pruned weight is already zero. Weight decay and momentum still move the
hidden ``*_orig`` entries, though, and a schedule that recomputes masks from ``orig``
(or a user who removes a mask) would then see them come back. :func:`enforce_masks`
zeroes those entries and their optimizer state after every step, so a pruned weight
stays exactly zero everywhere, not just in the forward pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .masks import refresh_pruned_tensors

__all__ = [
    "TrainConfig", "distillation_loss", "enforce_masks", "evaluate", "fit", "train_epoch", "predict",
    "recalibrate_batch_norm",
]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
# An extra loss term evaluated every step (e.g. ADMM's proximal penalty).
Penalty = Callable[[nn.Module], torch.Tensor]
# Called after every optimizer step (the iterative schedule tightens masks from here).
StepHook = Callable[[], None]


class Resumable(Protocol):
    """State that a checkpoint must carry besides the model and optimizer (a schedule's
    counters, ADMM's Z and U, a loader's shuffle generator)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainConfig:
    """SGD with Nesterov momentum and a cosine learning-rate schedule, per ``fit`` call."""

    epochs: int = 10
    lr: float = 0.05
    lr_schedule: str = "cosine"  # "cosine": from lr to 0 over each fit call; "constant"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    progress: bool = True  # tqdm bars for epochs and batches
    # ADMM's penalty weight rho, geometric from the first to the second value over the
    # ADMM epochs. It must beat weight decay by far to pull W onto the sparsity set
    # within a few epochs; lr * rho < 1 keeps the proximal step stable.
    admm_rho: tuple[float, float] = (1e-2, 1.0)
    # Knowledge distillation: the loss is ``(1 - distill) * CE + distill * T^2 * KL`` of
    # the student's and ``teacher``'s softened outputs (temperature T). ``prune`` sets the
    # teacher to a frozen copy of the model it was given (before pruning) when
    # ``distill > 0`` and ``teacher`` is None: the dense net teaches its pruned self.
    distill: float = 0.0
    temperature: float = 4.0
    teacher: nn.Module | None = field(default=None, repr=False, compare=False)
    history: list[dict[str, float]] = field(default_factory=list)
    # Resumable training: with a directory, every ``fit`` call saves its whole state to
    # ``<checkpoint_dir>/<description>.pt`` after each epoch (atomically), and a later
    # call with the same description continues after the last saved epoch -- a run that
    # was killed loses at most one epoch. A finished call's file stays, so re-running a
    # whole pruning schedule replays finished phases from their files in seconds.
    checkpoint_dir: Path | str | None = None
    # Train in torch's channels_last memory format (model, teacher and batches; the model
    # is handed back contiguous): the same fp32 arithmetic, and oneDNN's convolutions on
    # CPU run faster in it (docs/design.md, "Training").
    channels_last: bool = False


def _masked_params(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(orig parameter, mask)`` pairs of every pruning reparametrization in ``model``."""
    pairs = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                name = hook._tensor_name
                pairs.append((getattr(module, name + "_orig"), getattr(module, name + "_mask")))
    return pairs


@torch.no_grad()
def enforce_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero the hidden ``orig`` entries under a zero mask, and their optimizer state tensors."""
    for orig, mask in _masked_params(model):
        pruned = mask == 0
        orig.masked_fill_(pruned, 0.0)
        if optimizer is None:
            continue
        for value in optimizer.state.get(orig, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == orig.shape:
                value.masked_fill_(pruned, 0.0)


def _progress(iterable: Iterable, enabled: bool, **kwargs: object) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``."""
    return nn.functional.kl_div(
        nn.functional.log_softmax(logits / temperature, dim=1),
        nn.functional.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean", log_target=True) * temperature ** 2


def train_epoch(
    model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, penalty: Penalty | None = None,
    label_smoothing: float = 0.0, progress: bool = False, description: str = "train",
    teacher: nn.Module | None = None, distill: float = 0.0, temperature: float = 4.0,
    on_step: StepHook | None = None,
) -> dict[str, float]:
    """One pass of SGD over ``batches`` keeping masks enforced; mean loss and accuracy.

    With ``teacher`` and ``distill > 0`` the loss mixes in :func:`distillation_loss`
    (the teacher runs in eval mode). ``on_step()`` runs after every optimizer step,
    before the masks are enforced (so it may tighten them).
    """
    model.train()
    if teacher is not None:
        teacher.eval()
    seen, correct, loss_sum = 0, 0, 0.0
    for images, labels in _progress(batches, progress, desc=description):
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        total = loss
        if teacher is not None and distill > 0:
            with torch.no_grad():
                teacher_logits = teacher(images)
            total = (1 - distill) * loss + distill * distillation_loss(logits, teacher_logits, temperature)
        if penalty is not None:
            total = total + penalty(model)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
        enforce_masks(model, optimizer)
        if scheduler is not None:
            scheduler.step()
        seen += len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        loss_sum += float(loss.detach()) * len(labels)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}


@torch.no_grad()
def predict(model: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted classes, labels)`` over ``batches`` in eval mode; the training flag is restored."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for images, labels in batches:
            preds.append(model(images).argmax(1))
            targets.append(labels)
    finally:
        model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


def evaluate(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy of ``model`` on ``batches`` (eval mode, no gradients)."""
    preds, labels = predict(model, batches)
    return float((preds == labels).float().mean())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD (Nesterov); no weight decay on BatchNorm and bias vectors, as is usual."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def fit(
    model: nn.Module, train: Batches, config: TrainConfig, test: Batches | None = None,
    penalty: Penalty | None = None, on_epoch_end: Callable[[int], None] | None = None,
    description: str = "epoch", on_step: StepHook | None = None, resumable: Sequence[Resumable] = (),
) -> nn.Module:
    """Train ``config.epochs`` epochs (cosine LR to 0 by default), masks held; logs to ``config.history``.

    One optimizer and one cosine decay span all epochs of a call. ``on_epoch_end(epoch)``
    runs after each epoch (the ADMM Z/U updates hook in here), ``on_step()`` after each
    optimizer step; ``config.distill`` with ``config.teacher`` adds distillation.
    With ``test``, each epoch's test accuracy is recorded and shown on the bar.
    With ``config.checkpoint_dir`` the call resumes from and saves to its checkpoint
    (see :class:`TrainConfig`); ``resumable`` lists the callers' state that must travel
    with it (``train`` is added when it has ``state_dict``, as :class:`~tvm_mcpruner.data.BatchLoader` does).
    """
    if config.epochs <= 0:
        return model
    if config.channels_last:  # before the optimizer: .to() swaps parameter data in place
        _to_memory_format(torch.channels_last, model, config.teacher)
        train = (_SizedChannelsLastBatches if hasattr(train, "__len__") else _ChannelsLastBatches)(train)
    try:
        return _fit(model, train, config, test, penalty, on_epoch_end, description, on_step, resumable)
    finally:
        if config.channels_last:
            _to_memory_format(torch.contiguous_format, model, config.teacher)


def _to_memory_format(memory_format: torch.memory_format, *models: nn.Module | None) -> None:
    for model in models:
        if model is not None:
            model.to(memory_format=memory_format)


class _ChannelsLastBatches:
    """``batches`` with every 4-D image batch in channels_last (a loader's state passes through)."""

    def __init__(self, batches: Batches):
        self.batches = batches

    def __iter__(self):
        for images, labels in self.batches:
            yield (images.contiguous(memory_format=torch.channels_last) if images.dim() == 4 else images), labels

    def __getattr__(self, name: str):  # state_dict / load_state_dict of a resumable loader
        return getattr(self.batches, name)


class _SizedChannelsLastBatches(_ChannelsLastBatches):
    def __len__(self) -> int:  # the cosine schedule counts the steps
        return len(self.batches)


def _fit(model, train, config, test, penalty, on_epoch_end, description, on_step, resumable) -> nn.Module:
    optimizer = make_optimizer(model, config)
    steps = config.epochs * max(len(train), 1) if hasattr(train, "__len__") else None
    scheduler = None
    if config.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}")
    if steps and config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    checkpoint = _Checkpoint(config, description, model, optimizer, scheduler,
                             [*resumable, *([train] if hasattr(train, "state_dict") else [])])
    first = checkpoint.restore()
    enforce_masks(model, optimizer)
    bar = _progress(range(first, config.epochs), config.progress, desc=description, initial=first,
                    total=config.epochs)
    for epoch in bar:
        stats = train_epoch(model, train, optimizer, scheduler, penalty, config.label_smoothing,
                            progress=config.progress, description=f"{description} {epoch + 1}",
                            teacher=config.teacher, distill=config.distill, temperature=config.temperature,
                            on_step=on_step)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if test is not None:
            stats["test_accuracy"] = evaluate(model, test)
        config.history.append({"epoch": epoch + 1, **stats})
        checkpoint.save(epoch + 1)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: round(v, 4) for k, v in stats.items()})
    return model


class _Checkpoint:
    """One ``fit`` call's state in ``<checkpoint_dir>/<description>.pt``: model, optimizer,
    LR scheduler, torch's RNG, the ``resumable`` objects, the epochs done and the history
    entries this call added. Saved atomically (write, then rename) so a kill mid-save
    leaves the previous epoch's file whole."""

    VERSION = 1

    def __init__(self, config: TrainConfig, description: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, resumable: Sequence[Resumable]) -> None:
        self.config = config
        self.path = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / f"{description}.pt"
        self.description = description
        self.model, self.optimizer, self.scheduler, self.resumable = model, optimizer, scheduler, resumable
        self.history_start = len(config.history)

    def restore(self) -> int:
        """Load the saved state if there is one; the number of epochs it had done (0 without)."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which, never train over it silently
            raise ValueError(f"checkpoint {self.path} cannot be read ({err}); move it away to start afresh") from None
        expected = {"version": self.VERSION, "description": self.description, "epochs": self.config.epochs}
        found = {key: state.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"checkpoint {self.path} belongs to another training run ({found}, this one is "
                             f"{expected}); use another checkpoint_dir or move the file away")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {self.path} does not fit this model: {err}") from None
        refresh_pruned_tensors(self.model)  # a finished run replays with no forward to do it
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for item, item_state in zip(self.resumable, state["resumable"], strict=True):
            item.load_state_dict(item_state)
        torch.set_rng_state(state["rng"])
        self.config.history.extend(state["history"])
        return int(state["epoch"])

    def save(self, epoch: int) -> None:
        if self.path is None:
            return
        state = {
            "version": self.VERSION, "description": self.description, "epochs": self.config.epochs, "epoch": epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "resumable": [item.state_dict() for item in self.resumable], "rng": torch.get_rng_state(),
            "history": self.config.history[self.history_start:],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Batches, max_batches: int = 50) -> None:
    """Re-estimate every BatchNorm's running statistics from ``batches`` (exact averages).

    Pruning changes each layer's output distribution at once; the running statistics
    follow only slowly (momentum 0.1), so an eval-mode forward right after pruning (or
    after a short fine-tune) normalises with stale numbers and accuracy collapses even
    though train-mode accuracy is fine. A forward pass over some batches with cumulative
    averaging (``momentum=None``) fixes them; no weight changes.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum, m.training) for m in norms]
    was_training = model.training
    model.train()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    try:
        for index, (images, _) in enumerate(batches):
            if index >= max_batches:
                break
            model(images)
    finally:
        for norm, momentum, _ in saved:
            norm.momentum = momentum
        model.train(was_training)
