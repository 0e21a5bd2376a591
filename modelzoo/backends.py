"""Ray backend: the zoo's pending models train as Ray tasks; the driver writes each shard once all
its models are trained.

On a CPU, a zoo whose models train as populations runs one task per population, planned across
shards as the local backend plans them (``plan_populations``: only each group's last population
is padded), each at most the shard size rounded up to ``POPULATION_MULTIPLE`` models, so that
``--shard-size`` sets how finely the work spreads over the cluster; other zoos, and every zoo on
GPUs (whose population size depends on the worker's memory), run one task per shard.

With no address a local Ray instance is started; with an address it joins that cluster. Every task
runs with the driver's number of intra-op threads (capped by ``--workers`` for a local instance;
``--task-threads`` sets it) and asks that many CPUs (``--device cuda``: one GPU): some kernels
(BatchNorm, transposed convolutions) round differently with another thread count, so the default
keeps the bytes equal to the local backend's. The data set is loaded once by the driver and
shared through Ray's object store, so worker nodes need no copy of the data folder. A task whose
worker dies is retried (``max_retries``); shards already written are never redone, so a killed
driver resumes with ``zoo generate --resume``. Shards hold the same bytes as the local backend's.

``MODELZOO_RAY_TRACE=FILE`` (set for the driver) makes every task attempt append two JSON lines to
FILE on the node it runs on: ``{"event": "begin" | "end", "models", "pid", "host", "time"}``
(models: the zoo indices the task trains; time: Unix seconds). An attempt that began and never
ended died; a later "begin" of the same models is its retry. Tracing shows where tasks ran,
which ones were retried and which overlapped.
"""

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from modelzoo.archive import ArchiveWriter, ModelRun
from modelzoo.data import DataSplits
from modelzoo.errors import ZooError
from modelzoo.runtime import keep_freed_memory
from modelzoo.specs import ZooSpec, parse_spec
from modelzoo.train import train_configs
from modelzoo.train.population import POPULATION_MULTIPLE
from modelzoo.train.stream import (Shard, ShardCollector, plan_populations, plans_across_shards,
                                   population_sizes)

TASK_RETRIES = 3


TRACE_VARIABLE = "MODELZOO_RAY_TRACE"


def trace_attempt(trace: str | None, event: str, models: list[int]) -> None:
    """Append one line of the task-attempt trace (see the module docstring)."""
    if trace:
        line = {"event": event, "models": models, "pid": os.getpid(),
                "host": socket.gethostname(), "time": time.time()}
        with open(trace, "a") as f:  # one short write per line: lines of tasks never interleave
            f.write(json.dumps(line) + "\n")


def train_models(spec_json: dict, models: list[int], data: DataSplits, device: str,
                 population_size: int | None, threads: int,
                 trace: str | None = None) -> list[ModelRun]:
    """The work of one task, run inside a Ray worker with ``threads`` intra-op threads: the runs
    of the zoo's ``models`` (one shard's, or one population's)."""
    import torch

    trace_attempt(trace, "begin", models)
    torch.set_num_threads(threads)
    keep_freed_memory()  # a worker process, set up as the CLI sets up its own
    spec = parse_spec(spec_json)
    configs = spec.configs()
    runs = train_configs(spec, [configs[i] for i in models], data, device, population_size,
                         first=models[0])
    trace_attempt(trace, "end", models)
    return runs


def task_models(spec: ZooSpec, pending: list[tuple[int, int]], shard_size: int,
                data: DataSplits, device: str, population_size: int | None) -> list[list[int]]:
    """The zoo indices each task trains, in submission order: populations planned across shards
    (on a CPU, for a zoo that trains as populations; at most ``population_size``, else the
    automatic size capped at ``shard_size`` rounded up to ``POPULATION_MULTIPLE``), otherwise
    one shard each."""
    if not plans_across_shards(spec, population_size, device):
        return [list(range(start, stop)) for start, stop in pending]
    cap = -(-shard_size // POPULATION_MULTIPLE) * POPULATION_MULTIPLE
    automatic = population_sizes(spec, None, data.input_shape, device)
    plan = plan_populations(spec.configs(), pending,
                            lambda config: population_size or min(cap, automatic(config)))
    return [population.models for population in plan]


def send_auth_token() -> None:
    """Joining a cluster: Ray (2.59 on) starts ``ray start --head`` clusters with token
    authentication when a token file exists, but ``ray.init(address=...)`` only sends the token
    when ``RAY_AUTH_MODE=token`` is set (read when Ray is imported), and otherwise fails after a
    minute of retries. Set it when a token is there and the user has not chosen a mode."""
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN")
                                               or Path(token).is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def run_ray(spec: ZooSpec, writer: ArchiveWriter, data: DataSplits, device: str,
            population_size: int | None, address: str | None,
            num_cpus: int | None = None,
            task_threads: int | None = None) -> Iterator[Shard]:
    """Yield (start, stop, runs) for every pending shard, in completion order.

    ``task_threads``: intra-op threads (and CPUs asked) per task; default the driver's, which keeps
    the bytes equal to the local backend's. Fewer threads let tasks run side by side (1 thread on
    2 CPUs: two tasks at a time); the archive then equals a local run with that many threads."""
    if address:
        send_auth_token()  # before Ray is imported: it reads the mode then
    try:
        import ray
    except ImportError:
        raise ZooError("--backend ray needs Ray: pip install 'modelzoo[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ZooError(f"cannot start or join Ray (address={address!r}): {exc}") from None
    import torch

    threads = task_threads or torch.get_num_threads()
    if num_cpus and not address:
        threads = min(threads, num_cpus)
    resources = {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": threads}
    task = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False, **resources)(train_models)
    try:
        pending = writer.pending()
        collector = ShardCollector(pending)
        data_ref = ray.put(data)
        spec_json = spec.model_dump(mode="json")
        trace = os.environ.get(TRACE_VARIABLE)
        trace = str(Path(trace).resolve()) if trace else None  # workers run in other folders
        futures = {task.remote(spec_json, models, data_ref, device, population_size, threads,
                               trace): models
                   for models in task_models(spec, pending, writer.manifest.shard_size, data,
                                             device, population_size)}
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1)
            models = futures.pop(ready[0])
            try:
                runs = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise ZooError(f"the task of models {describe(models)} failed on Ray after "
                               f"{TASK_RETRIES} retries: {str(exc).splitlines()[0]}") from None
            yield from collector.add(models, runs)
    finally:
        if started_here:
            ray.shutdown()


def describe(models: list[int]) -> str:
    """Zoo indices as ranges: [0, 1, 2, 7] -> '0..2, 7'."""
    ranges: list[list[int]] = []
    for i in models:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges)
