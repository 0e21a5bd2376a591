"""Populations side by side on a CPU's cores.

A population step gains little from a second intra-op thread (measured: BENCHMARKS.md,
"Populations side by side"). Independent populations therefore train side by side on a CPU, each
in its own thread with an equal share of the intra-op threads (one each on 2 cores); PyTorch's
kernels release Python's lock, so the threads overlap. On the CPU a population's weights do not
depend on the thread count nor on what trains beside it, so the results are those of training
the populations one after another, bit for bit (tests/test_cores.py).

A job calls ``between_steps`` between its steps: there the last jobs widen their share of the
threads as others end, jobs wait while one runs ``alone`` (torch.fx tracing), and a run whose
caller has stopped (an error, Ctrl-C) ends its jobs.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from typing import TypeVar

import torch

T = TypeVar("T")

# Populations at most side by side. Every thread holds Python's lock for its step's Python work
# (module calls, autograd bookkeeping); measured on 2 cores only, so larger machines keep a few
# threads of several intra-op threads each rather than one thread per core.
MAX_SIDE_BY_SIDE = 4
_SET_THREADS = threading.Lock()  # torch.set_num_threads also sets the process-wide default
_worker = threading.local()  # in a side-by-side thread: .run (its _Run), .threads (its count)


class _Run:
    """What the threads of one ``side_by_side`` call share."""

    def __init__(self, threads: int, workers: int):
        self.threads = threads  # the caller's intra-op threads, shared among the running jobs
        self.workers = workers
        self.in_flight = 0  # jobs handed to the threads and not finished
        self.parked = 0  # of them, those waiting in ``between_steps`` or to run ``alone``
        self.exclusive = False  # one job runs ``alone``: the others park at their next step
        self.last_handed = False  # no job is left to hand out
        self.stopped = False  # the caller left: running jobs end at their next step
        self.lock = threading.Condition()  # guards the counts; notified when they change

    def finished_one(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.lock.notify_all()

    def share(self) -> int:
        """Intra-op threads for each running job: an equal share of ``threads`` among all of
        them, or among those still running once the last job is handed out."""
        return max(1, self.threads // max(1, self.in_flight if self.last_handed else self.workers))

    def park_until(self, ready) -> None:
        """Wait (holding ``lock``), counted as parked, until ``ready()``."""
        self.parked += 1
        self.lock.notify_all()
        self.lock.wait_for(ready)
        self.parked -= 1


@contextlib.contextmanager
def alone():
    """Inside ``side_by_side``: run the block while every other job waits at a step boundary
    (``between_steps``), for work that changes what every thread's module calls do (torch.fx
    tracing patches ``torch.nn.Module`` process-wide: another thread's module call would be
    traced). Elsewhere just the block."""
    run = getattr(_worker, "run", None)
    if run is None:
        yield
        return
    with run.lock:
        run.park_until(lambda: not run.exclusive)
        run.exclusive = True
        run.park_until(lambda: run.parked == run.in_flight)  # every job parked, this one too
    try:
        yield
    finally:
        with run.lock:
            run.exclusive = False
            run.lock.notify_all()


class Stopped(Exception):
    """Raised in a side-by-side job by ``between_steps`` once its caller has left."""


def between_steps() -> None:
    """Called by a job between its steps (``train_population``: every step). Inside
    ``side_by_side``: wait while another job runs ``alone``; raise ``Stopped`` if the caller
    has left; set this thread's intra-op
    threads to its current share, so that the last jobs take the cores of threads with nothing
    left to run (a model's weights on the CPU do not depend on the thread count). Does nothing
    elsewhere."""
    run = getattr(_worker, "run", None)
    if run is None:
        return
    if run.exclusive:
        with run.lock:
            run.park_until(lambda: not run.exclusive)
    if run.stopped:
        raise Stopped
    if (share := run.share()) != _worker.threads:
        with _SET_THREADS:
            torch.set_num_threads(share)  # this thread's OpenMP team (and the process default)
        _worker.threads = share


def side_by_side_workers(jobs: int, device: torch.device) -> int:
    """How many of ``jobs`` run at once on ``device``: up to the intra-op thread count (at most
    ``MAX_SIDE_BY_SIDE``) on a CPU, outside another ``side_by_side``; one elsewhere."""
    if device.type != "cpu" or getattr(_worker, "run", None) is not None:
        return 1
    return max(1, min(jobs, torch.get_num_threads(), MAX_SIDE_BY_SIDE))


def side_by_side(jobs: Iterator[Callable[[], T]], count: int, device: torch.device) -> Iterator[T]:
    """Run ``count`` jobs and yield their results as they finish.

    With ``side_by_side_workers(count, device)`` > 1, a pool of that many threads runs the
    jobs, each with an equal share of the caller's intra-op threads (``between_steps`` widens
    the share of the last jobs). ``jobs`` is advanced in the caller's thread, one job whenever a
    thread is free, so work its generator does before yielding a job (reading a shard) happens
    only when needed. However the caller leaves (done, a job's exception raised here, an
    exception of its own, the generator closed), running jobs end at their next
    ``between_steps``, the threads are joined and the caller's thread count is restored.
    Otherwise the jobs run one after another in the caller's thread, in order.
    """
    workers = side_by_side_workers(count, device)
    if workers == 1:
        for job in jobs:
            yield job()
        return
    run = _Run(torch.get_num_threads(), workers)

    def enter() -> None:  # each pool thread, once
        _worker.run, _worker.threads = run, 0

    def execute(job: Callable[[], T]) -> T:
        try:
            between_steps()
            return job()
        finally:
            run.finished_one()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="population-", initializer=enter)
    running: set[Future] = set()
    handed = 0
    try:
        pending = iter(jobs)
        while True:
            if len(running) == workers:  # every thread busy: wait for one
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
            if (job := next(pending, None)) is None:
                break
            with run.lock:
                run.in_flight += 1
            running.add(pool.submit(execute, job))
            handed += 1
            run.last_handed = handed >= count
        run.last_handed = True
        for future in as_completed(running):
            yield future.result()
    finally:
        run.stopped = True
        pool.shutdown(wait=True, cancel_futures=True)
        with _SET_THREADS:
            torch.set_num_threads(run.threads)
