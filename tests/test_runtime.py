"""The malloc settings the command-line tools run with (``modelzoo.runtime``)."""

import resource
import sys

import pytest
import torch

from modelzoo.data import create_dataset
from modelzoo.runtime import keep_freed_memory
from modelzoo.specs import TrainingConfig
from modelzoo.train.population import PopulationOptimizer, population_forwards, stack_states
from modelzoo.train.single import build_model


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_population_steps_reuse_freed_memory():
    """A population step allocates the same multi-megabyte activations every step. With the
    settings (conftest applies them, as the CLI does) freed blocks are reused, so a step faults in
    no fresh pages; with glibc's defaults a 32-model CNN-s step faulted in 2,000-5,000."""
    assert keep_freed_memory()
    n_models = 32
    data = create_dataset("digits")
    configs = [TrainingConfig(seed=s, activation="tanh") for s in range(n_models)]
    models = [build_model("cnn_s", {"in_channels": 1}, c) for c in configs]
    params = stack_states([m.state_dict() for m in models])
    optimizer = PopulationOptimizer(params, configs)
    train_step, _ = population_forwards("cnn_s", models[0], params, torch.zeros(n_models))
    index = torch.randint(len(data.train), (n_models, 10))
    keys = torch.zeros(n_models, dtype=torch.int64)
    active = torch.ones(n_models, dtype=torch.bool)

    def step():
        optimizer.step(train_step(data.train.x[index], data.train.y[index], keys), active)

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 100, faults
