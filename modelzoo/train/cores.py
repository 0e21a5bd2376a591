"""Populations side by side on a CPU's cores.

A population step gains little from a second intra-op thread: its grouped convolutions, pools and
optimiser updates are many small kernels (BENCHMARKS.md, "Both cores"). Independent populations
therefore train side by side on a CPU, each in its own thread with an equal share of the
intra-op threads (one each on 2 cores); PyTorch's kernels release Python's lock, so the threads
overlap. On the CPU a population's weights do not depend on the thread count nor on what trains
beside it (tests/test_population.py), so the results are those of training the populations one
after another, bit for bit.
"""

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")

# Populations at most side by side. Every thread holds Python's lock for its step's Python work
# (module calls, autograd bookkeeping); measured on 2 cores only, so larger machines keep a few
# threads of several intra-op threads each rather than one thread per core.
MAX_SIDE_BY_SIDE = 4
_SET_THREADS = threading.Lock()  # torch.set_num_threads also resizes process-wide pools


def side_by_side_workers(jobs: int, device: torch.device) -> int:
    """How many of ``jobs`` run at once on ``device``: up to the intra-op thread count (at most
    ``MAX_SIDE_BY_SIDE``) on a CPU, one elsewhere."""
    if device.type != "cpu":
        return 1
    return max(1, min(jobs, torch.get_num_threads(), MAX_SIDE_BY_SIDE))


def side_by_side(jobs: Iterator[Callable[[], T]], count: int, device: torch.device) -> Iterator[T]:
    """Run ``count`` jobs and yield their results as they finish.

    With ``side_by_side_workers(count, device)`` > 1, that many daemon threads run the jobs, each
    with ``threads // workers`` intra-op threads, and the caller's thread count is restored at
    the end. ``jobs`` is advanced in the caller's thread, one job whenever a thread is free, so
    work its generator does before yielding a job (reading a shard) happens only when needed. A
    job's exception is raised in the caller after the threads have been told to stop taking
    jobs (a job already running finishes in its thread). Otherwise the jobs run one after
    another in the caller's thread, in order.
    """
    workers = side_by_side_workers(count, device)
    if workers == 1:
        for job in jobs:
            yield job()
        return
    threads = torch.get_num_threads()
    share = max(1, threads // workers)
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        with _SET_THREADS:
            torch.set_num_threads(share)  # this thread's OpenMP team (and the process default)
        while (job := todo.get()) is not None:
            try:
                done.put((True, job()))
            except BaseException as error:  # noqa: BLE001 - raised in the caller below
                done.put((False, error))

    pool = [threading.Thread(target=work, name=f"population-{i}", daemon=True)
            for i in range(workers)]
    in_flight = 0
    try:
        for thread in pool:
            thread.start()
        for job in jobs:
            if in_flight == workers:
                yield _result(done.get())
                in_flight -= 1
            todo.put(job)
            in_flight += 1
        while in_flight:
            yield _result(done.get())
            in_flight -= 1
    finally:
        for _ in pool:
            todo.put(None)
        with _SET_THREADS:
            torch.set_num_threads(threads)


def _result(outcome: tuple[bool, object]):
    ok, value = outcome
    if not ok:
        raise value
    return value
