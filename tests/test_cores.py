"""Populations side by side on a CPU's cores (modelzoo.train.cores)."""

import threading
import time

import numpy as np
import pytest
import torch

from modelzoo.data import create_dataset
from modelzoo.specs import TrainingConfig
from modelzoo.train import cores, population
from modelzoo.train.cores import side_by_side
from modelzoo.train.population import train_population_groups
from tests.test_population import MIXED_32, small


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_jobs_run_at_once_each_with_its_share_of_the_threads(two_threads):
    both_running = threading.Barrier(2, timeout=10)  # broken (and raising) if one waits alone

    def job(k):
        both_running.wait()
        return k, threading.current_thread().name, torch.get_num_threads()

    results = list(side_by_side((lambda k=k: job(k) for k in range(2)), 2, torch.device("cpu")))
    assert sorted(k for k, _, _ in results) == [0, 1]
    assert len({name for _, name, _ in results}) == 2
    assert all(threads == 1 for _, _, threads in results)
    assert torch.get_num_threads() == 2


def test_jobs_are_taken_only_when_a_thread_is_free(two_threads):
    finished: list[int] = []
    taken_after: list[int] = []  # how many jobs had finished when each job was taken

    def jobs():
        for k in range(6):
            taken_after.append(len(finished))
            yield lambda k=k: (time.sleep(0.05), finished.append(k), k)[-1]

    assert sorted(side_by_side(jobs(), 6, torch.device("cpu"))) == list(range(6))
    assert all(done >= k - 1 for k, done in enumerate(taken_after)), taken_after


def test_a_failing_job_raises_in_the_caller_and_stops_the_others(two_threads):
    """The job beside a failing one ends at its next step; no thread is left running."""
    steps = []

    def endless():
        while len(steps) < 1000:  # 10 s
            cores.between_steps()
            steps.append(1)
            time.sleep(0.01)
        return "never stopped"

    def fail():
        time.sleep(0.1)
        raise ValueError("bad population")

    start = time.perf_counter()
    with pytest.raises(ValueError, match="bad population"):
        list(side_by_side(iter([endless, fail, lambda: 3]), 3, torch.device("cpu")))
    assert time.perf_counter() - start < 5 and len(steps) < 500
    assert not [t for t in threading.enumerate() if t.name.startswith("population-")]
    assert torch.get_num_threads() == 2


def test_other_devices_and_single_jobs_run_in_the_caller(two_threads):
    caller = threading.current_thread().name
    for device, count in ((torch.device("cuda"), 3), (torch.device("cpu"), 1)):
        jobs = (lambda: threading.current_thread().name for _ in range(count))
        assert list(side_by_side(jobs, count, device)) == [caller] * count


def test_populations_side_by_side_train_as_one_after_another(two_threads, monkeypatch):
    """A group's populations train side by side, one thread each, bit for bit as one after
    another with both threads; TF32 flags are back afterwards."""
    configs = [TrainingConfig(epochs=2, activation="tanh", **c) for c in MIXED_32[:24]]
    data = small(create_dataset("digits"), n_train=200)
    trained_in: list[tuple[str, int]] = []
    train_population = population.train_population

    def spy(*args, **kwargs):
        trained_in.append((threading.current_thread().name, torch.get_num_threads()))
        return train_population(*args, **kwargs)

    monkeypatch.setattr(population, "train_population", spy)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    side = train_population_groups("cnn_s", {"in_channels": 1}, configs, data, "cpu", 8)
    assert len({name for name, _ in trained_in}) == 2 and {t for _, t in trained_in} == {1}
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == flags
    monkeypatch.setattr(cores, "MAX_SIDE_BY_SIDE", 1)
    trained_in.clear()
    one_by_one = train_population_groups("cnn_s", {"in_channels": 1}, configs, data, "cpu", 8)
    assert {t for _, t in trained_in} == {2}
    for a, b in zip(side, one_by_one, strict=True):
        np.testing.assert_array_equal(a.states, b.states)
        for name in a.metrics:
            np.testing.assert_array_equal(a.metrics[name], b.metrics[name])


def test_the_last_jobs_take_the_idle_cores(two_threads):
    """Once the last job is handed out, a job still running widens its share as others end."""
    first_done = threading.Event()
    seen: dict[str, list[int]] = {}

    def short():
        cores.between_steps()
        seen["short"] = [torch.get_num_threads()]
        first_done.set()
        return "short"

    def long():
        cores.between_steps()
        seen["long"] = [torch.get_num_threads()]
        assert first_done.wait(10)
        time.sleep(0.05)  # the short job's thread has left
        cores.between_steps()
        seen["long"].append(torch.get_num_threads())
        return "long"

    assert sorted(side_by_side(iter([long, short]), 2, torch.device("cpu"))) == ["long", "short"]
    assert seen == {"short": [1], "long": [1, 2]}


def test_tracing_runs_alone_while_the_other_job_calls_modules(two_threads):
    """torch.fx tracing (evaluation's fused first layer) patches torch.nn.Module for every
    thread: a module called by the job beside it during a trace went into the trace ("module is
    not installed as a submodule"). The tracing job runs ``alone``: the other waits at a step."""
    from modelzoo.train.grouped import shared_input_network

    class Traced(torch.nn.Module):  # a grouped network's signature
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x, dropout_key=None, dropout_p=None):
            return self.second(torch.tanh(self.first(x)))

    stop = threading.Event()
    layer = torch.nn.Linear(4, 4)

    def calls_modules():
        calls = 0
        while not stop.is_set() and calls < 100_000:
            cores.between_steps()
            layer(torch.ones(1, 4))
            calls += 1
        return calls

    def traces():
        try:
            for _ in range(50):
                shared_input_network(Traced())
            return "traced"
        finally:
            stop.set()

    results = list(side_by_side(iter([calls_modules, traces]), 2, torch.device("cpu")))
    assert "traced" in results and all(r == "traced" or r > 0 for r in results)
