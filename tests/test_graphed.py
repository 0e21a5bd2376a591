"""``GraphedTrainer`` (the one-at-a-time step replayed as a CUDA graph on a GPU) trains what
``train_epoch`` trains: checked here on its eager path, on the CPU, against torch.nn + torch.optim.
The CUDA capture itself runs in tests/test_gpu.py and benchmarks/bench_gpu.py."""

import numpy as np
import pytest
import torch

from modelzoo.specs import TrainingConfig
from modelzoo.train.graphed import GraphedTrainer, schedule_tables
from modelzoo.train.single import (
    build_model,
    make_optimizer,
    make_scheduler,
    seed_roots,
    train_epoch,
)

CASES = {
    # ResNet-18 zoo training: SGD with momentum and weight decay, OneCycle, crop + flip, BatchNorm.
    # In float64: in float32 BatchNorm over 8 tiny images grows rounding chaotically (a 1e-7
    # change of the reference's own initial weights moves its BatchNorm biases by up to 15 %).
    "resnet18": ({"in_channels": 1}, (1, 8, 8), torch.float64,
                 dict(optimizer="sgd", lr=0.05, schedule="onecycle", augment=["crop", "flip"],
                      weight_decay=5e-4, batch_size=8)),
    # small-zoo training: Adam, dropout keyed per step; float32 agrees bit for bit
    "cnn_s": ({"in_channels": 1}, (1, 28, 28), torch.float32,
              dict(lr=1e-3, dropout=0.3, batch_size=8)),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_graphed_trainer_equals_train_epoch(arch):
    kwargs, shape, dtype, options = CASES[arch]
    config = TrainingConfig(seed=3, epochs=2, activation="relu", **options)
    x, y = torch.randn(64, *shape, dtype=dtype), torch.randint(10, (64,))
    steps = 4
    batches = [torch.randperm(64, generator=torch.Generator().manual_seed(e))[:steps * 8]
               .view(steps, 8) for e in range(config.epochs)]
    root = seed_roots([config.seed])

    reference = build_model(arch, kwargs, config).to(dtype)
    optimizer = make_optimizer(reference, config)
    scheduler = make_scheduler(optimizer, config, steps)
    graphed = build_model(arch, kwargs, config).to(dtype)
    trainer = GraphedTrainer(graphed, config, x, y, root, steps)
    for epoch, epoch_batches in enumerate(batches):
        train_epoch(reference, optimizer, scheduler, config, epoch_batches, x, y, root,
                    epoch * steps)
        trainer.train_epoch(epoch_batches, epoch * steps)
    expected, got = reference.state_dict(), graphed.state_dict()
    initial = build_model(arch, kwargs, config).to(dtype).state_dict()
    assert expected.keys() == got.keys()
    bound = 1e-9 if dtype == torch.float64 else 1e-6  # measured: 6e-12 and 0 (bit for bit)
    moved = 0
    for name, value in expected.items():
        scale = float(value.abs().max()) or 1.0
        assert float((got[name] - value).abs().max()) <= bound * scale, name
        moved += not torch.equal(value, initial[name])
    assert moved > len(expected) // 2  # the runs trained


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_channels_last_weights_keep_their_layout():
    """Under ``mixed`` (bf16 autocast on a GPU) conv weights stay channels_last in the flat
    buffer and train as in ``train_epoch`` (here on the CPU, where the autocast is inert)."""
    config = TrainingConfig(seed=1, epochs=1, optimizer="sgd", lr=0.01, batch_size=8)
    x, y = torch.randn(32, 1, 8, 8).contiguous(memory_format=torch.channels_last), \
        torch.randint(10, (32,))
    batches = torch.arange(32).view(4, 8)
    root = seed_roots([1])
    models = [build_model("resnet18", {"in_channels": 1}, config).double()
              .to(memory_format=torch.channels_last) for _ in range(2)]
    optimizer = make_optimizer(models[0], config)
    train_epoch(models[0], optimizer, None, config, batches, x.double(), y, root, 0, mixed=True)
    trainer = GraphedTrainer(models[1], config, x.double(), y, root, 4, mixed=True)
    trainer.train_epoch(batches, 0)
    weight = models[1].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert weight.data_ptr() == trainer.optimizer.flat.data_ptr()  # a view of the flat buffer
    for name, value in models[0].state_dict().items():
        scale = float(value.abs().max()) or 1.0
        assert float((models[1].state_dict()[name] - value).abs().max()) <= 1e-9 * scale, name


def test_schedule_tables_follow_torch_scheduler():
    config = TrainingConfig(seed=0, epochs=3, optimizer="sgd", lr=0.1, schedule="onecycle")
    lr, momentum = schedule_tables(config, 5, torch.device("cpu"))
    assert lr.shape == momentum.shape == (15,)
    assert float(lr.max()) == pytest.approx(0.1, rel=1e-2) and float(lr[0]) == pytest.approx(0.004)
    assert float(momentum.min()) == pytest.approx(0.85, rel=1e-2) and float(momentum[0]) == 0.95
    constant = TrainingConfig(seed=0, epochs=1, lr=1e-3)
    assert schedule_tables(constant, 4, torch.device("cpu"))[0].tolist() == [1e-3] * 4


def test_steps_past_the_schedule_are_refused():
    config = TrainingConfig(seed=0, epochs=1, lr=1e-3, batch_size=8)
    trainer = GraphedTrainer(build_model("cnn_s", {"in_channels": 1}, config), config,
                             torch.zeros(32, 1, 28, 28), torch.zeros(32, dtype=torch.int64),
                             seed_roots([0]), 2)
    with pytest.raises(ValueError, match="past the schedule"):
        trainer.train_epoch(torch.arange(24).view(3, 8), 0)


def test_adam_with_a_schedule_is_refused():
    config = TrainingConfig(seed=0, epochs=1, lr=1e-3, schedule="onecycle")
    with pytest.raises(ValueError, match="Adam"):
        GraphedTrainer(build_model("cnn_s", {"in_channels": 1}, config), config,
                       torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64),
                       seed_roots([0]), 1)


@pytest.mark.parametrize("fine_tune", [False, True])
def test_train_model_records_the_same_through_the_graphed_step(monkeypatch, fine_tune):
    """``train_model``'s GPU route (``GraphedTrainer``, run here eagerly on the CPU) records what
    the reference loop records, bit for bit: CNN-s with Adam and keyed dropout, and fine-tuning
    a pruned state (masks held at zero after every step)."""
    from modelzoo.data import create_dataset
    from modelzoo.train import alone
    from tests.test_population import small

    data = small(create_dataset("digits"), n_train=100)
    config = TrainingConfig(seed=2, epochs=2, lr=1e-3, dropout=0.3, activation="tanh")
    initial = mask = None
    if fine_tune:
        initial = alone.train_model("cnn_s", {"in_channels": 1}, config, data).states[-1]
        mask = np.abs(initial) > np.median(np.abs(initial))
    reference = alone.train_model("cnn_s", {"in_channels": 1}, config, data, "cpu", initial, mask)
    monkeypatch.setattr(alone, "graphed_training", lambda config, device: True)
    graphed = alone.train_model("cnn_s", {"in_channels": 1}, config, data, "cpu", initial, mask)
    assert len(reference.states) == 3 and not np.array_equal(reference.states[0],
                                                             reference.states[-1])
    np.testing.assert_array_equal(graphed.states, reference.states)
    assert graphed.metrics.keys() == reference.metrics.keys()
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(graphed.metrics[name], values, err_msg=name)
    if fine_tune:
        assert not graphed.states[:, ~mask].any()


def test_adam_with_a_schedule_trains_eagerly_on_a_gpu():
    from modelzoo.train.alone import graphed_training

    cuda = torch.device("cuda")
    assert graphed_training(TrainingConfig(seed=0, lr=1e-3), cuda)
    assert graphed_training(TrainingConfig(seed=0, optimizer="sgd", schedule="onecycle"), cuda)
    assert not graphed_training(TrainingConfig(seed=0, schedule="onecycle"), cuda)
    assert not graphed_training(TrainingConfig(seed=0, lr=1e-3), torch.device("cpu"))
