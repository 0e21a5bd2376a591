"""The training steps that a GPU replays as CUDA graphs ask nothing of the host.

On a GPU, a tensor made from host data (``torch.tensor``), a scalar read (``.item()``, ``bool()``,
``float()``) or a boolean-mask index (its output size needs the mask's count) each wait for the
device, and none of them may run inside a CUDA graph's capture. These tests record every
operation of one step under a dispatch mode on the CPU, so such an operation fails here before
it reaches a GPU (it had: ``KeyedDropout`` built its rate with ``torch.tensor``).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modelzoo.specs import TrainingConfig
from modelzoo.train.graphed import GraphedTrainer
from modelzoo.train.population import PopulationOptimizer, population_forwards, stack_states
from modelzoo.train.single import build_model, seed_roots, step_keys

HOST_OPS = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default",
            "aten._local_scalar_dense.default", "aten.nonzero.default",
            "aten.masked_select.default"}


class HostRequests(TorchDispatchMode):
    """Records each operation of the block that would make a GPU wait for the host."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        masks = name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for arg in args if isinstance(arg, list | tuple) for i in arg)
        if name in HOST_OPS or masks:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


RESNET = ("resnet18", {"in_channels": 1, "width": 4}, (1, 8, 8),
          dict(optimizer="sgd", lr=0.05, schedule="onecycle", augment=["crop", "flip"],
               dropout=0.2))


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("arch, kwargs, shape, options, mixed", [
    # ResNet zoos: SGD + OneCycle, crop + flip, BatchNorm, keyed dropout; mixed: channels_last
    # weights in the flat buffer (the bf16 autocast itself is inert on a CPU)
    (*RESNET, False), (*RESNET, True),
    ("cnn_s", {"in_channels": 1}, (1, 28, 28), dict(lr=1e-3, dropout=0.3), False),
])
def test_graphed_step_asks_nothing_of_the_host(arch, kwargs, shape, options, mixed):
    config = TrainingConfig(seed=1, epochs=1, batch_size=8, **options)
    x, y = torch.randn(32, *shape), torch.randint(10, (32,))
    model = build_model(arch, kwargs, config)
    if mixed:
        model, x = model.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    trainer = GraphedTrainer(model, config, x, y, seed_roots([1]), 4, mixed=mixed, capture=False)
    trainer.idx.copy_(torch.arange(8))
    with HostRequests() as host:
        trainer.replay()
    assert host.found == []


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_population_step_asks_nothing_of_the_host(kind):
    """The population's step as ``train_population`` captures it: per-model keyed dropout at
    mixed rates, the gradients, the flat-buffer update with some models inactive."""
    configs = [TrainingConfig(seed=s, dropout=[0.0, 0.5][s % 2], optimizer=kind, lr=1e-3,
                              weight_decay=1e-4, momentum=0.9, batch_size=4) for s in range(16)]
    models = [build_model("cnn_s", {"in_channels": 1}, c) for c in configs]
    params = stack_states([m.state_dict() for m in models])
    optimizer = PopulationOptimizer(params, configs)
    rates = torch.tensor([c.dropout for c in configs])
    train_step, _ = population_forwards("cnn_s", models[0], params, rates)
    x, y = torch.randn(16, 4, 1, 28, 28), torch.randint(10, (16, 4))
    keys = step_keys(seed_roots([c.seed for c in configs]), 1)
    active = torch.arange(16) % 3 != 0
    with HostRequests() as host:
        optimizer.step(train_step(x, y, keys), active)
    assert host.found == []
