"""Accuracy-keeping pruning: masks held while training, ratio allocation, schedules, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tvm_mcpruner as mcp
from tvm_mcpruner.pruning import TrainConfig, evaluate, fit, load_pruned, prune, save_pruned
from tvm_mcpruner.pruning.schedules import gradual_keeps
from tvm_mcpruner.pruning.sensitivity import KEEP_LEVELS, issued_macs_per_pixel, lowest_keep_level
from tvm_mcpruner.sparse_format import pack_pattern_weights

from .test_pruning_structure import check_aligned

LANES = 4  # hikey970-cpu


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def synthetic_batches(n: int = 512, batch: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """4 classes of 12x12 images: a bright blob in one quadrant, plus noise (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, 12, 12, generator=g)
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        images[i, 0, 6 * r:6 * r + 6, 6 * c:6 * c + 6] += 1.0
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


def trained_net() -> nn.Module:
    model = small_net()
    fit(model, synthetic_batches(), TrainConfig(epochs=6, lr=0.05, progress=False))
    return model


def pruned_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and hasattr(m, "weight_mask")]


def test_masks_hold_and_optimizer_state_cannot_revive_them():
    pruned, _ = prune(small_net(), target="hikey970-cpu", keep_kernels=0.5)
    config = TrainConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-2, progress=False)
    fit(pruned, synthetic_batches(), config)
    for conv in pruned_convs(pruned):
        zeros = conv.weight_mask == 0
        assert zeros.any()
        # the hidden parameter itself is zero, so no later mask change or removal revives it
        assert (conv.weight_orig[zeros] == 0).all()
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    pruned(synthetic_batches()[0][0]).sum().backward()
    optimizer.step()
    mcp.pruning.enforce_masks(pruned, optimizer)
    for conv in pruned_convs(pruned):
        zeros = conv.weight_mask == 0
        assert (optimizer.state[conv.weight_orig]["momentum_buffer"][zeros] == 0).all()
        torch.nn.utils.prune.remove(conv, "weight")
        assert (conv.weight[zeros] == 0).all()


def test_without_enforcement_weight_decay_leaves_values_behind():
    # Shows what enforce_masks guards against: torch's mask alone keeps stale hidden values.
    pruned, _ = prune(small_net(), target="hikey970-cpu", keep_kernels=0.5)
    conv = pruned_convs(pruned)[0]
    zeros = conv.weight_mask == 0
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1, weight_decay=1e-2)
    pruned(synthetic_batches()[0][0]).sum().backward()
    optimizer.step()
    assert (conv.weight_orig[zeros] != 0).any()


def test_gradual_keeps_cubic_to_target():
    keeps = gradual_keeps(0.25, 4)
    assert keeps[-1] == pytest.approx(0.25)
    assert all(a > b for a, b in zip(keeps, keeps[1:]))
    assert keeps[0] - keeps[1] > keeps[2] - keeps[3], "prunes fast first, slowly near the target"


@pytest.mark.parametrize("with_data", [False, True])
def test_ratio_reaches_target_with_uneven_layers(with_data):
    model = trained_net()
    x = synthetic_batches()[0][0]
    data = synthetic_batches() if with_data else None
    pruned, report = prune(model, target="hikey970-cpu", ratio=4, data=data, example_input=x[:1])
    assert report.mac_reduction >= 4
    keeps = {layer.kept_kernels / layer.total_kernels for layer in report.pruned_layers}
    assert len(keeps) > 1, "sensitivity gives layers different keeps"
    for conv in pruned_convs(pruned):
        if conv.kernel_size == (3, 3):
            c = conv.in_channels
            kept = int((conv.weight[:LANES] != 0).any(dim=(0, 2, 3)).sum())
            check_aligned(conv.weight, LANES, 4, kept / c)


def test_issued_macs_formula_matches_the_format():
    weight = torch.randn(10, 12, 3, 3)
    pruned, _ = prune(nn.Sequential(nn.Conv2d(12, 10, 3)).eval(), target="hikey970-cpu", keep_kernels=0.375)
    packed = pack_pattern_weights(pruned[0].weight.detach().numpy(), LANES)
    assert issued_macs_per_pixel(weight.shape, LANES, 4, 0.375) == packed.stored_macs_per_pixel


def test_unreachable_ratio_names_the_limit():
    with pytest.raises(ValueError, match="out of reach"):
        prune(small_net(), target="hikey970-cpu", ratio=1000, example_input=torch.randn(1, 1, 12, 12))


def kept_shares(report) -> list[float]:
    return [layer.kept_kernels / layer.total_kernels for layer in report.pruned_layers]


def test_min_layer_keep_floors_the_allocation_and_still_reaches_the_ratio():
    model, data = trained_net(), synthetic_batches()
    x = data[0][0][:1]
    _, free = prune(model, target="hikey970-cpu", ratio=4, data=data, example_input=x)
    assert min(kept_shares(free)) < 0.375, "without a floor some layer goes below it (else this proves nothing)"
    _, floored = prune(model, target="hikey970-cpu", ratio=4, data=data, example_input=x, min_layer_keep=0.375)
    assert floored.mac_reduction >= 4
    assert min(kept_shares(floored)) >= 0.375 - 1e-9
    # 0.3 is not a level: the floor is the lowest level above it
    assert KEEP_LEVELS[lowest_keep_level(0.3)] == 0.3125
    assert KEEP_LEVELS[lowest_keep_level(KEEP_LEVELS[-1])] == KEEP_LEVELS[-1]


def test_min_layer_keep_bad_values_name_the_problem():
    net, x = small_net(), torch.randn(1, 1, 12, 12)
    with pytest.raises(ValueError, match="out of reach: keeping 0.5 of every"):
        prune(net, target="hikey970-cpu", ratio=4, example_input=x, min_layer_keep=0.5)
    with pytest.raises(ValueError, match="min_layer_keep must be a number in"):
        prune(net, target="hikey970-cpu", ratio=4, example_input=x, min_layer_keep=0.05)
    with pytest.raises(ValueError, match="give it with ratio"):
        prune(net, target="hikey970-cpu", keep_kernels=0.5, min_layer_keep=0.25)


@pytest.mark.parametrize("schedule", ["iterative", "admm"])
def test_schedules_end_aligned_and_keep_accuracy(schedule):
    model = trained_net()
    data = synthetic_batches()
    before = evaluate(model, synthetic_batches(seed=1))
    config = TrainConfig(lr=0.02, progress=False, admm_rho=(0.5, 20.0))
    pruned, report = prune(model, target="hikey970-cpu", keep_kernels=0.5, data=data, schedule=schedule,
                           epochs=6, train_config=config)
    assert len(report.pruned_layers) == 4  # three 3x3 convs and the 1x1 (the 1-channel stem stays dense)
    for conv in pruned_convs(pruned):
        if conv.kernel_size == (3, 3):
            check_aligned(conv.weight, LANES, 4, 0.5)
    after = evaluate(pruned, synthetic_batches(seed=1))
    assert before > 0.9 and after > before - 0.1
    assert any("epoch" in h for h in config.history), "training happened"


def test_admm_pulls_weights_into_the_sparsity_set():
    config = TrainConfig(lr=0.02, progress=False, admm_rho=(0.5, 20.0))
    prune(trained_net(), target="hikey970-cpu", keep_kernels=0.25, data=synthetic_batches(), schedule="admm",
          epochs=6, train_config=config)
    distances = [h["distance"] for h in config.history if "distance" in h]
    assert len(distances) == 4, "before ADMM and after each of its 3 epochs"
    assert distances[-1] < 0.6 * distances[0]


def test_oneshot_with_epochs_fine_tunes():
    config = TrainConfig(lr=0.02, progress=False)
    prune(trained_net(), target="hikey970-cpu", data=synthetic_batches(), epochs=2, train_config=config)
    assert [h["epoch"] for h in config.history] == [1, 2]


@pytest.mark.parametrize("kwargs,match", [
    ({"schedule": "magic"}, "schedule must be one of"),
    ({"schedule": "admm"}, "needs data"),
    ({"schedule": "iterative", "data": [], "epochs": 1}, "epochs >= 2"),
    ({"epochs": 3}, "needs data"),
    ({"ratio": 0.5}, "ratio must be"),
    ({"layer_keeps": {"nope": 0.5}}, "not pruned: nope"),
    ({"layer_keeps": {"3": 1.5}}, "layer_keeps"),
])
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune(small_net(), target="hikey970-cpu", **kwargs)


def test_layer_keeps_by_hand():
    _, report = prune(small_net(), target="hikey970-cpu", layer_keeps={"3": 0.25, "7": 1.0})
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["3"].kept_kernels == 16 * 2 and by_name["7"].kept_kernels == 16 * 16


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    model = mcp.models.get_model("vgg11_small", num_classes=4)
    pruned, _ = prune(model, target="hikey970-cpu")
    path = save_pruned(pruned, tmp_path / f"m{suffix}", meta={"model": "vgg11_small",
                                                              "model_kwargs": {"num_classes": 4}})
    loaded, meta = load_pruned(path)
    assert meta["model_kwargs"] == {"num_classes": 4}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))
    assert hasattr(loaded.features[4], "weight_mask")  # conv 16->32 (after conv, BN, ReLU, pool)



@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".pt", ".safetensors"]), target=st.sampled_from(["hikey970-cpu", "x86-avx2",
                                                                             "x86-avx512"]),
    classes=st.integers(1, 12), in_channels=st.integers(1, 4), pattern_k=st.integers(1, 9),
    keep=st.one_of(st.just(1.0), st.floats(0.01, 1.0)), seed=st.integers(0, 2**16),
)
def test_save_load_round_trip_property(tmp_path, suffix, target, classes, in_channels, pattern_k, keep, seed):
    """Whatever was pruned, loading what was saved gives the same tensors, masks and outputs."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    torch.manual_seed(seed)
    kwargs = {"num_classes": classes, "in_channels": in_channels}
    pruned, _ = prune(mcp.models.get_model("vgg11_small", **kwargs), target=target, pattern_k=pattern_k,
                      keep_kernels=keep)
    path = save_pruned(pruned, tmp_path / f"m{seed}{suffix}", meta={"model": "vgg11_small",
                                                                     "model_kwargs": kwargs})
    loaded, meta = load_pruned(path)
    assert meta["model_kwargs"] == kwargs
    saved, restored = pruned.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    x = torch.randn(2, in_channels, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))

def test_load_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not written by save_pruned"):
        load_pruned(tmp_path / "other.pt", small_net())
    with pytest.raises(FileNotFoundError):
        load_pruned(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="does not name its model"):
        load_pruned(save_pruned(small_net(), tmp_path / "anon.pt"))


def test_keep_levels_descend():
    assert list(KEEP_LEVELS) == sorted(KEEP_LEVELS, reverse=True) and KEEP_LEVELS[0] == 1.0


def test_batch_norm_recalibration_uses_exact_statistics_of_the_data():
    model = small_net().train()
    batches = synthetic_batches(n=128, batch=64)
    for _ in range(3):  # running statistics drift towards, but do not reach, these batches
        model(batches[0][0] * 3)
    mcp.pruning.train.recalibrate_batch_norm(model, batches)
    with torch.no_grad():
        first_conv = model[0](torch.cat([x for x, _ in batches]))
    bn = model[1]
    # momentum=None averages the per-batch means: with equal batch sizes, the overall mean
    assert torch.allclose(bn.running_mean, first_conv.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and model.training


def test_schedules_leave_batch_norm_matching_the_pruned_weights():
    pruned, _ = prune(trained_net(), target="hikey970-cpu", keep_kernels=0.25, data=synthetic_batches(), epochs=0)
    batches = synthetic_batches()
    with torch.no_grad():
        conv_out = pruned[3](pruned[2](pruned[1](pruned[0](torch.cat([x for x, _ in batches])))))
    assert torch.allclose(pruned[4].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4)


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise():
    from tvm_mcpruner.pruning.train import distillation_loss

    logits = torch.randn(8, 4)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, torch.randn(8, 4), 4.0)) > 0


def test_prune_distills_from_a_frozen_copy_of_the_unpruned_model():
    model = trained_net()
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    original = mcp.pruning.train.distillation_loss

    def spy(logits, teacher_logits, temperature):
        seen.append(temperature)
        return original(logits, teacher_logits, temperature)

    mcp.pruning.train.distillation_loss = spy
    try:
        config = TrainConfig(lr=0.02, progress=False, distill=0.5, temperature=2.0)
        pruned, _ = prune(model, target="hikey970-cpu", keep_kernels=0.5, data=synthetic_batches(),
                          schedule="iterative", epochs=2, train_config=config)
    finally:
        mcp.pruning.train.distillation_loss = original
    assert seen and set(seen) == {2.0}, "the distillation term was used"
    assert config.teacher is None, "the caller's config is not changed"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "the input model is untouched"
    assert evaluate(pruned, synthetic_batches(seed=1)) > 0.8


def test_lr_schedules():
    for schedule, last_lr in (("cosine", 0.0), ("constant", 0.1)):
        model = small_net()
        lrs = []
        original = torch.optim.SGD.step

        def step(self, *args, **kwargs):
            lrs.append(self.param_groups[0]["lr"])
            return original(self, *args, **kwargs)

        torch.optim.SGD.step = step
        try:
            fit(model, synthetic_batches(n=256), TrainConfig(epochs=2, lr=0.1, lr_schedule=schedule, progress=False))
        finally:
            torch.optim.SGD.step = original
        assert lrs[0] == pytest.approx(0.1) and len(lrs) == 8
        assert lrs[-1] == pytest.approx(last_lr, abs=0.01)
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(small_net(), synthetic_batches(), TrainConfig(epochs=1, lr_schedule="step", progress=False))


def test_iterative_tightens_masks_gradually_inside_one_run():
    from tvm_mcpruner.pruning import schedules

    model = trained_net()
    data = synthetic_batches(n=1024)  # 16 batches: a mask update every 2 steps
    kept = []
    original = schedules.fit

    def recording_fit(model_, data_, config_, **kwargs):
        hook = kwargs.get("on_step")

        def on_step():
            hook()
            kept.append(int(model_[3].weight_mask.sum()))

        return original(model_, data_, config_, **{**kwargs, "on_step": on_step})

    schedules.fit = recording_fit
    try:
        pruned, report = prune(model, target="hikey970-cpu", keep_kernels=0.25, data=data, schedule="iterative",
                               epochs=4, train_config=TrainConfig(lr=0.02, progress=False))
    finally:
        schedules.fit = original
    assert len(kept) == 4 * 16
    assert all(a >= b for a, b in zip(kept, kept[1:])), "masks only tighten"
    assert len(set(kept[:32])) > 4, "many small steps over the first half"
    assert len(set(kept[32:])) == 1, "then the final masks train"
    assert len(report.pruned_layers) == 4, "the 1x1 conv was not dropped by a mild early step"
    check_aligned(pruned[3].weight, LANES, 4, 0.25)


class Killed(Exception):
    pass


class ShuffledBatches:
    """A re-iterable, freshly shuffled per pass from its own generator (like BatchLoader),
    that can be told to die after ``fail_after`` batches (a killed training run)."""

    def __init__(self, fail_after: int | None = None) -> None:
        batches = synthetic_batches()
        self.images = torch.cat([images for images, _ in batches])
        self.labels = torch.cat([labels for _, labels in batches])
        self.generator = torch.Generator().manual_seed(1)
        self.fail_after = fail_after
        self.served = 0

    def __len__(self) -> int:
        return len(self.labels) // 64

    def __iter__(self):
        order = torch.randperm(len(self.labels), generator=self.generator)
        for start in range(0, len(order), 64):
            if self.fail_after is not None and self.served == self.fail_after:
                raise Killed
            self.served += 1
            yield self.images[order[start:start + 64]], self.labels[order[start:start + 64]]

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


@pytest.mark.parametrize("schedule", ["iterative", "admm"])
def test_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, schedule):
    torch.set_num_threads(1)  # bitwise repeatable CPU training
    base = trained_net()

    def run(data, checkpoint_dir):
        config = TrainConfig(lr=0.02, progress=False, distill=0.5, checkpoint_dir=checkpoint_dir)
        return prune(base, target="hikey970-cpu", data=data, schedule=schedule, ratio=3, epochs=4,
                     train_config=config)

    reference, reference_report = run(ShuffledBatches(), None)
    # killed in the third epoch (admm: in its retrain phase; iterative: after the ramp)
    with pytest.raises(Killed):
        run(ShuffledBatches(fail_after=2 * 8 + 3), tmp_path)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == (["admm.pt"] if schedule == "admm" else ["iterative.pt"])
    resumed, report = run(ShuffledBatches(), tmp_path)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert report.mac_reduction == reference_report.mac_reduction
    # a finished run replays from its files without training again (it still reads a
    # batch or two for sensitivity and the epoch of BatchNorm re-estimation)
    data = ShuffledBatches()
    replayed, _ = run(data, tmp_path)
    assert data.served <= 8 + 2
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, replayed.state_dict()[name]), name


def test_checkpoint_of_another_run_is_refused_not_overwritten(tmp_path):
    model = small_net()
    fit(model, synthetic_batches(), TrainConfig(epochs=1, progress=False, checkpoint_dir=tmp_path))
    before = (tmp_path / "epoch.pt").read_bytes()
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(small_net(), synthetic_batches(), TrainConfig(epochs=3, progress=False, checkpoint_dir=tmp_path))
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        fit(small_net(), synthetic_batches(), TrainConfig(epochs=1, progress=False, checkpoint_dir=tmp_path),
            description="other")
    assert (tmp_path / "epoch.pt").read_bytes() == before


@pytest.mark.parametrize("schedule", ["iterative", "admm"])
def test_channels_last_training_keeps_masks_and_hands_back_a_contiguous_model(schedule):
    """``TrainConfig(channels_last=True)``: same fp32 arithmetic in another memory layout, so
    the schedule ends aligned with its masks held, and the model (and its teacher) come back
    contiguous for export."""
    model = trained_net()
    config = TrainConfig(lr=0.02, progress=False, admm_rho=(0.5, 20.0), distill=0.5, channels_last=True)
    pruned, _ = prune(model, target="hikey970-cpu", keep_kernels=0.5, data=synthetic_batches(),
                      schedule=schedule, epochs=4, train_config=config)
    for conv in pruned_convs(pruned):
        assert conv.weight_orig.is_contiguous() and conv.weight_mask.is_contiguous()
        assert torch.all(conv.weight_orig[conv.weight_mask == 0] == 0)
        if conv.kernel_size == (3, 3):
            check_aligned(conv.weight, LANES, 4, 0.5)
    assert all(p.is_contiguous() for p in config.teacher.parameters()) if config.teacher is not None else True
    assert evaluate(pruned, synthetic_batches(seed=1)) > 0.8


def test_channels_last_fit_matches_the_contiguous_fit():
    """One epoch each way from the same weights: the same training up to float rounding
    (8 SGD steps at lr 0.05 grow the convolutions' reordered sums to ~2e-4; a layout mistake
    would differ by the weights' own size)."""
    data = synthetic_batches()
    models = [small_net(seed=3), small_net(seed=3)]
    for model, channels_last in zip(models, (False, True)):
        torch.manual_seed(0)
        fit(model, data, TrainConfig(epochs=1, lr=0.05, progress=False, channels_last=channels_last))
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
        assert b.is_contiguous()


def test_load_names_the_file_of_an_empty_truncated_or_inconsistent_save(tmp_path):
    import time

    good = save_pruned(small_net(), tmp_path / "good.pt", meta={"model": "vgg11_small"})
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    for name in ("empty.pt", "cut.pt"):
        with pytest.raises(ValueError, match=f"{name} was not written by save_pruned"):
            load_pruned(tmp_path / name)
    torch.save({"state_dict": {}, "meta": "{not json"}, tmp_path / "badmeta.pt")
    with pytest.raises(ValueError, match="badmeta.pt was not written by save_pruned"):
        load_pruned(tmp_path / "badmeta.pt")
    # ~100 bytes whose metadata asks for a 64x-wide ResNet-18 (gigabytes): refused unbuilt
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)},
                "meta": json.dumps({"model": "resnet18", "model_kwargs": {"width": 64}})}, tmp_path / "bomb.pt")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="bomb.pt: its metadata describes a model whose .* disagree"):
        load_pruned(tmp_path / "bomb.pt")
    assert time.perf_counter() - start < 10
    torch.save({"state_dict": {}, "meta": json.dumps({"model": "no-such-net"})}, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown.pt: its metadata names a model that cannot be built"):
        load_pruned(tmp_path / "unknown.pt")
