"""GPU benchmark: one command, no download, under 8 minutes on one H100 / H200.

    python -m benchmarks.bench_gpu [--models 1000] [--epochs 1] [--alone 2] [--tests EXPR]
        [--deadline 460] [--conv-kernels auto]
        [--sections profile,drift,tests,resnet18,hyperrep,alone,generate,kernels]

Every section at once takes more than 8 minutes with 1,000 models (the 1-epoch ``zoo generate``
alone is about 2 minutes on an H200): ``--sections`` splits the work between calls.

Writes MNIST-shaped IDX files itself (60k train + 10k test 28x28 images: scikit-learn digits
scaled up, shifted and noised), then measures, each in the same process or a child of it:
- profile: a ``--models`` CNN-s population's training step (a replayed CUDA graph) in each conv
  layout and with each of the GPU's conv kernel options (``CONV_KERNELS``), each conv layer's
  forward + backward with each option, and its evaluation (input read once or copied; each
  kernel option);
- one at a time: ``train_model`` of MNIST-Seed configs on that data (each step one replayed CUDA
  graph, as ``zoo generate`` trains one model at a time on a GPU), model-epochs/s;
- ``zoo generate`` of the MNIST-Seed spec (zoo_specs/mnist-seed.yaml, ``--models`` seeds) for 0 and
  ``--epochs`` epochs, every epoch evaluated on train/val/test and stored, its populations' conv
  kernels those of ``--conv-kernels`` (default: the fastest of profile); the difference gives
  seconds per epoch, extrapolated to 1,000 models x 50 epochs (shown as such);
- population vs alone on the GPU: max |w_pop - w_alone| / layer scale after 2 epochs, a 32-model
  CNN-s population mixing lr, init and dropout, twice (tests/test_gpu.py holds the bounds), and
  the same models trained alone twice, once with cuDNN off: the drift of two valid computations;
- ResNet-18 (the CIFAR-10 spec's training: SGD, OneCycle, crop + flip, batch 256, bf16 autocast,
  channels_last): images/s, the fraction of the card's dense bf16 peak and how busy the GPU is;
  one model eager, with cudnn.benchmark, under torch.compile (default and reduce-overhead), with
  the whole step as one CUDA graph, and four trained at once on four CUDA streams (eager, graphed);
- ``hyperrep train`` on a CNN-s zoo: tokens/s and model FLOP utilisation (6 x params x tokens);
- ``pytest tests/test_gpu.py`` (correctness on the GPU, every zoo kind with --device cuda);
- kernels: the population's training step (each conv kernel option) and evaluation under the
  profiler, kernels by time.
Prints one table last.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda"  # --device
# dense bf16 tensor-core peaks (vendor datasheets, TFLOP/s)
BF16_PEAK = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}
SECTIONS = ("profile", "drift", "tests", "resnet18", "hyperrep", "alone", "generate", "kernels")


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def ms_per_call(fn, repeats: int) -> float:
    """Milliseconds per call of ``fn`` over ``repeats`` calls, after one untimed call."""
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return 1000 * (time.perf_counter() - start) / repeats


def write_mnist_like(root: Path, n_train: int = 60_000, n_test: int = 10_000) -> Path:
    """MNIST's four IDX files under ``root``: learnable 28x28 digits."""
    from sklearn.datasets import load_digits

    from tests.test_data import write_idx

    root.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(0)
    base = np.kron(digits.images, np.ones((3, 3))) * (255 / 16)  # [1797, 24, 24]
    for name, n in (("train", n_train), ("t10k", n_test)):
        pick = rng.integers(len(base), size=n)
        images = np.zeros((n, 28, 28))
        shifts = rng.integers(0, 5, size=(n, 2))
        for dy in range(5):
            for dx in range(5):
                chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                images[chosen, dy:dy + 24, dx:dx + 24] = base[pick[chosen]]
        images = np.clip(images + rng.normal(0, 20, images.shape), 0, 255)
        write_idx(root / f"{name}-images-idx3-ubyte", images)
        write_idx(root / f"{name}-labels-idx1-ubyte", digits.target[pick])
    return root


def mnist_seed_spec(models: int, epochs: int) -> dict:
    spec = yaml.safe_load((ROOT / "zoo_specs/mnist-seed.yaml").read_text())
    spec["training"]["epochs"] = epochs
    spec["factors"]["seed"] = {"range": [1, models + 1]}
    return spec


def timed_generate(spec: dict, root: Path, work: Path, timeout: float,
                   kernels: str | None = None) -> float | None:
    """Wall seconds of the real ``zoo generate --device cuda`` (None: over ``timeout``), with
    the population's conv ``kernels`` (``MODELZOO_CONV_KERNELS``; None: the default)."""
    path = work / f"{spec['name']}-{spec['training']['epochs']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, **({"MODELZOO_CONV_KERNELS": kernels} if kernels else {})}
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "cli.zoo", "generate", str(path), "--out",
                        str(work / path.stem), "--data-root", str(root), "--device", DEVICE],
                       check=True, timeout=timeout, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def alone_rate(root: Path, n: int) -> float:
    """Model-epochs/s of MNIST-Seed configs trained one at a time (1 epoch each, evaluated)."""
    from modelzoo.specs import parse_spec
    from modelzoo.train import load_data
    from modelzoo.train.alone import train_model

    spec = parse_spec(mnist_seed_spec(n, 1))
    data = load_data(spec, root)
    train_model("cnn_s", {"in_channels": 1}, spec.configs()[0].model_copy(update={"epochs": 0}),
                data, DEVICE)  # warm-up: CUDA context, cuDNN handles
    sync()
    start = time.perf_counter()
    for config in spec.configs():
        train_model("cnn_s", {"in_channels": 1}, config, data, DEVICE)
    sync()
    return n / (time.perf_counter() - start)


def cnn_s_population(configs: list) -> tuple[torch.nn.Module, dict[str, torch.Tensor], object]:
    """A CNN-s population of ``configs`` on the device: the template model, the stacked
    parameters {name: [P, ...]} and their ``PopulationOptimizer`` (which holds them)."""
    from modelzoo.train.population import PopulationOptimizer, stack_states
    from modelzoo.train.single import build_model

    models = [build_model("cnn_s", {"in_channels": 1}, c) for c in configs]
    params = {n: t.to(DEVICE) for n, t in stack_states([m.state_dict() for m in models]).items()}
    return models[0].to(DEVICE), params, PopulationOptimizer(params, configs)


def conv_layer_times(template: torch.nn.Module, params: dict[str, torch.Tensor],
                     x: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """ms per forward + backward (weight, bias and, past the first layer, input gradients) of
    each convolution of a population's training step, on its real input (``x`` [P, B, ...], a
    step's batches), with each ``CONV_KERNELS`` option: a replayed CUDA graph each, so that the
    best option per layer can be read off."""
    from modelzoo.train.grouped import CONV_KERNELS, GroupedConv2d, grouped_network
    from modelzoo.train.grouped import to_population_arrangement as arrange
    from modelzoo.train.population import capture_step

    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    network = grouped_network(template, leaves, torch.contiguous_format, "grouped").train()
    inputs = {}  # layer name: its input in the step
    hooks = [module.register_forward_pre_hook(
                 lambda module, args, name=name: inputs.setdefault(name, args[0].detach()))
             for name, module in network.named_modules() if isinstance(module, GroupedConv2d)]
    with torch.no_grad():
        network(arrange(x, flat=True))
    for hook in hooks:
        hook.remove()
    out = {}
    for index, (name, value) in enumerate(inputs.items()):
        layer = network.get_submodule(name)
        value = value.requires_grad_(index > 0)  # the first layer reads the data
        wrt = [layer.weight, layer.bias] + ([value] if index > 0 else [])
        for kernels in CONV_KERNELS:
            layer.kernels = kernels
            grad_out = torch.randn_like(layer(value))

            def run(layer=layer, value=value, wrt=wrt, grad_out=grad_out):
                torch.autograd.grad(layer(value), wrt, grad_out)

            replay = capture_step(run, []) if DEVICE == "cuda" else run
            shape = "x".join(str(d) for d in value.shape)
            out[f"ms per {name} [{shape}] forward + backward ({kernels})"] = \
                ms_per_call(replay, repeats)
    return out


def profile_population(root: Path, models: int, steps: int = 30) -> dict[str, float]:
    """Where a CNN-s population's time goes on MNIST-sized data: ms per training step (a
    replayed CUDA graph) with conv activations channels_last and NCHW, and in NCHW with each
    ``CONV_KERNELS`` option for the per-model convolutions, and per conv layer and option
    (``conv_layer_times``); seconds per evaluation of the test
    split with the input read once (as ``zoo generate`` evaluates), as P copies (as before) and
    with each kernel option, and seconds per evaluation of all splits."""
    from modelzoo.specs import parse_spec
    from modelzoo.train import load_data
    from modelzoo.train.grouped import CONV_KERNELS, conv_kernels, conv_layout
    from modelzoo.train.population import (
        activation_elements,
        capture_step,
        evaluate_population,
        population_forwards,
    )
    from modelzoo.train.single import exact_float32

    spec = parse_spec(mnist_seed_spec(models, 1))
    data = load_data(spec, root)
    splits = data.on(DEVICE)
    template, params, optimizer = cnn_s_population(spec.configs())
    x, y = splits["train"].x, splits["train"].y
    idx = torch.randint(len(x), (models, 10), device=DEVICE)
    key = torch.zeros(models, dtype=torch.int64, device=DEVICE)
    active = torch.ones(models, dtype=torch.bool, device=DEVICE)

    out = {}
    evaluations = {}  # variant: forward_shared
    variants = [("channels_last, grouped", torch.channels_last, "grouped")] + \
        [(f"NCHW, {kernels}", torch.contiguous_format, kernels) for kernels in CONV_KERNELS]
    with exact_float32():
        for variant, memory_format, kernels in variants:
            train_step, evaluations[variant] = population_forwards(
                "cnn_s", template, params, torch.zeros(models, device=DEVICE), memory_format,
                kernels)

            def step(train_step=train_step):
                optimizer.step(train_step(x[idx], y[idx], key), active)

            graphed = capture_step(step, optimizer.state()) if DEVICE == "cuda" else step
            out[f"ms per training step ({variant}, CUDA graph)"] = ms_per_call(graphed, steps)
        out.update(conv_layer_times(template, params, x[idx]))
        device = torch.device(DEVICE)
        default = "{}, {}".format("NCHW" if conv_layout(device) == torch.contiguous_format
                                  else "channels_last", conv_kernels(device))
        forward_shared = evaluations[default]  # as zoo generate evaluates
        template.eval()
        per_sample = activation_elements(template, splits["test"].x[:1])
        template.train()
        test = splits["test"]

        def forward_copies(xb):
            return forward_shared(xb.repeat(1, models, 1, 1))

        for label, forward in [(f"input read once, {variant}", evaluations[variant])
                               for variant, *_ in variants] + [("P copies", forward_copies)]:
            forward(test.x[:2])  # warm-up
            sync()
            start = time.perf_counter()
            evaluate_population(forward, models, test, per_sample)
            sync()
            out[f"s per evaluation of the test split (10k images, {label})"] = \
                time.perf_counter() - start
        sync()
        start = time.perf_counter()
        for split in splits.values():
            evaluate_population(forward_shared, models, split, per_sample)
        sync()
        out[f"s per evaluation of all splits (70k images, {default})"] = \
            time.perf_counter() - start
    return out


def population_drift() -> dict[str, list[float]]:
    """Per model of a 32-model CNN-s population (lr x init x dropout), max |dw| / layer scale after
    2 epochs on the device, between pairs of runs of the same models: the population against each
    model trained alone, once per ``CONV_KERNELS`` option (the default twice: do runs repeat?);
    one population of 32 against two of 16 (does a model depend on its population?); and alone
    against alone with the convolution library off (cuDNN on a GPU, oneDNN on a CPU; PyTorch's
    own convolutions then), how far two equally valid float32 computations of one model part,
    the scale against which the population's drift is read."""
    from modelzoo.archive.layout import Layout
    from modelzoo.data import create_dataset
    from modelzoo.specs import TrainingConfig
    from modelzoo.train import grouped
    from modelzoo.train.alone import train_model
    from modelzoo.train.population import train_population, train_population_groups
    from modelzoo.train.single import build_model
    from tests.test_gpu import MIXED_32, max_relative_drift
    from tests.test_population import small

    data = small(create_dataset("digits"))
    configs = [TrainingConfig(epochs=2, activation="tanh", **c) for c in MIXED_32]
    layout = Layout.of(build_model("cnn_s", {"in_channels": 1}, configs[0]))

    def alone():
        return [train_model("cnn_s", {"in_channels": 1}, c, data, DEVICE) for c in configs]

    def population(size: int | None = None):
        return train_population_groups("cnn_s", {"in_channels": 1}, configs, data, DEVICE, size) \
            if size else train_population("cnn_s", {"in_channels": 1}, configs, data, DEVICE)

    reference = alone()
    default = grouped.conv_kernels(torch.device(DEVICE))
    pairs = {f"population ({default}) vs alone, run 2": (population(), reference)}
    saved = os.environ.get(grouped.CONV_KERNELS_ENV)
    try:
        for kernels in grouped.CONV_KERNELS:
            os.environ[grouped.CONV_KERNELS_ENV] = kernels  # as a run picks them
            whole = population()
            pairs[f"population ({kernels}) vs alone"] = (whole, reference)
            pairs[f"population of 32 vs two of 16 ({kernels})"] = (whole, population(16))
    finally:
        os.environ.pop(grouped.CONV_KERNELS_ENV)
        if saved is not None:
            os.environ[grouped.CONV_KERNELS_ENV] = saved
    name, library = ("cuDNN", torch.backends.cudnn) if DEVICE.startswith("cuda") else \
        ("oneDNN", torch.backends.mkldnn)
    with library.flags(enabled=False):
        pairs[f"alone vs alone with {name} off"] = (alone(), reference)
    return {label: [max_relative_drift(b.states, a.states, layout) for a, b in zip(*runs)]
            for label, runs in pairs.items()}


def resnet18_throughput(models: int = 1, steps: int = 40, compiled: str | None = None,
                        cudnn_benchmark: bool = False,
                        graphed: bool = False) -> tuple[float, float, float]:
    """(images/s, TFLOP/s, GPU busy fraction) of ResNet-18 training steps on the GPU (eager: the
    reference loop ``train_epoch``; ``graphed``: as ``train_model`` trains on a GPU), for
    ``models`` models trained at once, each in its own thread and CUDA stream (the
    "streams" way of several models per step; measured here before ``zoo generate`` uses it).
    ``compiled``: the model under ``torch.compile`` in this mode ("default", or "reduce-overhead":
    forward and backward replayed as CUDA graphs); ``graphed``: the whole step (with the update)
    one CUDA graph (``GraphedTrainer``); ``cudnn_benchmark``: cuDNN picks its
    algorithms by timing them. The busy fraction (kernel time / wall time of a profiled epoch)
    says whether the host's launches or the GPU's kernels are the limit (one model only)."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from torch.utils.flop_counter import FlopCounterMode

    from modelzoo.specs import parse_spec
    from modelzoo.train.graphed import GraphedTrainer
    from modelzoo.train.single import (
        build_model,
        exact_float32,
        make_optimizer,
        make_scheduler,
        mixed_precision,
        seed_roots,
        train_epoch,
    )

    spec = parse_spec(yaml.safe_load((ROOT / "zoo_specs/resnet18-cifar10-seed.yaml").read_text()))
    configs = spec.configs()[:models]
    device = torch.device(DEVICE)
    batch = configs[0].batch_size
    x = torch.rand(batch * 8, 3, 32, 32, device=device)
    y = torch.randint(10, (batch * 8,), device=device)

    class Trainee:  # one model, its optimiser, schedule and stream
        def __init__(self, config):
            self.config = config
            self.model = build_model("resnet18", spec.architecture.kwargs(), config).to(device)
            self.mixed = mixed_precision(self.model, device)
            self.model = self.model.to(memory_format=torch.channels_last)
            self.optimizer = make_optimizer(self.model, config)  # on the uncompiled parameters
            if compiled:
                self.model = torch.compile(self.model, mode=compiled)
            self.scheduler = make_scheduler(self.optimizer, config, steps)
            self.batches = torch.randint(len(x), (steps, batch), device=device)
            self.root = seed_roots([config.seed], device)
            self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            self.graphed = GraphedTrainer(self.model, config, x, y, self.root, steps,
                                          mixed=self.mixed) if graphed else None

        def train(self, batches, first_step):
            with torch.cuda.stream(self.stream) if self.stream else nullcontext():
                if self.graphed:
                    self.graphed.train_epoch(batches, first_step)
                else:
                    train_epoch(self.model, self.optimizer, self.scheduler, self.config, batches,
                                x, y, self.root, first_step, mixed=self.mixed)
            if self.stream:
                self.stream.synchronize()

    trainees = [Trainee(c) for c in configs]
    sync()
    saved_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        with exact_float32(), ThreadPoolExecutor(models) as pool:  # TF32 set once for every thread
            list(pool.map(lambda t: t.train(t.batches[:5], 0), trainees))  # warm-up
            sync()
            start = time.perf_counter()
            list(pool.map(lambda t: t.train(t.batches, 5), trainees))
            sync()
            images_s = models * steps * batch / (time.perf_counter() - start)
            busy = gpu_busy_fraction(lambda: trainees[0].train(trainees[0].batches, 5)) \
                if models == 1 else float("nan")
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark
    with FlopCounterMode(display=False) as counter:
        loss = getattr(trainees[0].model, "_orig_mod", trainees[0].model)(x[:batch]).mean()
        loss.backward()
    return images_s, counter.get_total_flops() / batch * images_s / 1e12, busy


def gpu_busy_fraction(fn) -> float:
    """Sum of the device's kernel times over the wall time of ``fn()`` (nan without CUDA)."""
    if not DEVICE.startswith("cuda"):
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - start
    kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6  # us -> s
    return kernels / wall


def population_kernels(models: int, part: str, steps: int = 5) -> str:
    """The kernels of a ``models``-CNN-s population by total time (the device's default layout):
    ``part`` "step-<kernels>" (``steps`` eager training steps on batches of 10, the per-model
    convolutions with that ``CONV_KERNELS`` option) or "evaluation" (10k images, as ``zoo
    generate`` evaluates a split)."""
    from torch.profiler import ProfilerActivity, profile

    from modelzoo.data import Split
    from modelzoo.specs import TrainingConfig
    from modelzoo.train.population import (
        activation_elements,
        evaluate_population,
        population_forwards,
    )
    from modelzoo.train.single import exact_float32

    template, params, optimizer = cnn_s_population(
        [TrainingConfig(seed=s, epochs=1, batch_size=10, activation="tanh") for s in range(models)])
    train_step, forward_shared = population_forwards(
        "cnn_s", template, params, torch.zeros(models, device=DEVICE),
        kernels=part.removeprefix("step-") if part.startswith("step-") else None)
    if part == "evaluation":
        split = Split(torch.randn(10_000, 1, 28, 28, device=DEVICE),
                      torch.randint(10, (10_000,), device=DEVICE))
        per_sample = activation_elements(template.eval(), split.x[:1])

        def run():
            evaluate_population(forward_shared, models, split, per_sample)
    else:
        x = torch.randn(models, 10, 1, 28, 28, device=DEVICE)
        y = torch.randint(10, (models, 10), device=DEVICE)
        key = torch.zeros(models, dtype=torch.int64, device=DEVICE)
        active = torch.ones(models, dtype=torch.bool, device=DEVICE)

        def run():
            optimizer.step(train_step(x, y, key), active)

    with exact_float32():
        for _ in range(2):
            run()  # warm-up
        sync()
        activities = [ProfilerActivity.CUDA if DEVICE.startswith("cuda") else ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            for _ in range(1 if part == "evaluation" else steps):
                run()
            sync()
    sort = "self_device_time_total" if DEVICE.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=70)


def hyperrep_throughput(work: Path) -> dict[str, tuple[float, float]]:
    """{mode: (tokens/s, TFLOP/s by 6 x params x tokens)} of ``hyperrep train`` on a 200-model
    CNN-s zoo: the default config (SANE) and the compression mode (the default until 2026-11-26,
    measured at 302,777 tokens/s on an H200 with the views built on the host)."""
    from hyperrep.config import TrainConfig
    from hyperrep.run import load_run
    from hyperrep.train import train
    from modelzoo.generate import generate
    from modelzoo.specs import parse_spec

    spec = yaml.safe_load((ROOT / "zoo_specs/digits-seed.yaml").read_text())
    zoo_path = generate(parse_spec(spec), work / "digits-seed", device=DEVICE)
    out = {}
    for mode in ("sane", "compression"):
        run = work / f"hyperrep-{mode}"
        times: list[float] = []
        train(zoo_path, run, TrainConfig(epochs=3, mode=mode), DEVICE,
              on_epoch=lambda epoch, record, times=times: times.append(time.perf_counter()))
        model, config = load_run(run, DEVICE)
        n_train = len(config["splits"]["train"]) * len(config["zoo_epochs"])  # samples per epoch
        params = sum(p.numel() for p in model.parameters())
        epoch_tokens = 2 * n_train * model.cfg.n_tokens  # two augmented views of every sample
        tokens_s = epoch_tokens * (len(times) - 1) / (times[-1] - times[0])
        out[mode] = tokens_s, 6 * params * tokens_s / 1e12
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000, help="MNIST-Seed models generated")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the timed generate run")
    parser.add_argument("--alone", type=int, default=2, help="models trained one at a time")
    parser.add_argument("--deadline", type=float, default=460,
                        help="seconds after start by which zoo generate must end")
    parser.add_argument("--tests", default="", help="pytest -k expression (default: all)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, run in this order: {','.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--conv-kernels", default="auto",
                        help="the populations' conv kernels in the generate section (auto: the "
                             "NCHW option with the fastest step if profile ran, else the default)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {','.join(SECTIONS)}")
    if args.skip_tests:
        chosen = [name for name in chosen if name != "tests"]
    global DEVICE
    DEVICE = args.device
    deadline = time.perf_counter() + args.deadline
    name = torch.cuda.get_device_name() if DEVICE.startswith("cuda") else "cpu"
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)

    class Rows(list):  # every figure is printed the moment it is measured
        def append(self, row):
            print(f"  {row[0]}: {row[1]}", flush=True)
            super().append(row)

    rows = Rows()
    rows.append(("device", f"{name}, torch {torch.__version__}"))

    def section(label, fn):
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one failing measurement must not hide the others
            rows.append((label, f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"))
        print(f"[{label}: {time.perf_counter() - start:.0f} s]", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = write_mnist_like(work / "mnist")
        alone = {}
        fastest = {}  # "kernels": the NCHW conv kernels of the fastest step (profile)

        def one_at_a_time():
            alone["rate"] = alone_rate(root, args.alone)
            rows.append(("one at a time (MNIST-sized)", f"{alone['rate']:.3f} model-epochs/s"))

        def zoo_generate():
            kernels = fastest.get("kernels") if args.conv_kernels == "auto" else args.conv_kernels
            rows.append(("zoo generate: the populations' conv kernels",
                         f"{kernels} (fastest step in profile)" if args.conv_kernels == "auto"
                         and kernels else kernels or "the default"))
            times = {}
            for epochs in (0, args.epochs):
                left = deadline - time.perf_counter()
                spent = timed_generate(mnist_seed_spec(args.models, epochs), root, work, left,
                                       kernels)
                if spent is None:
                    rows.append((f"zoo generate, {epochs} epochs", f"over {left:.0f} s"))
                    return
                times[epochs] = spent
                rows.append((f"zoo generate MNIST-Seed, {args.models} models, {epochs} epochs",
                             f"{spent:.1f} s wall"))
            per_epoch = (times[args.epochs] - times[0]) / args.epochs
            rate = args.models / per_epoch
            full = (times[0] + 50 * per_epoch) * 1000 / args.models
            rows.append(("one epoch (train + evaluate all splits + store)",
                         f"{per_epoch:.1f} s = {rate:.1f} model-epochs/s"))
            if "rate" in alone:
                rows.append(("ratio population / one at a time", f"{rate / alone['rate']:.0f}x"))
            rows.append(("MNIST-Seed 1000 x 50 epochs (extrapolated)", f"{full / 60:.1f} min"))

        def drift():
            for label, drifts in population_drift().items():
                drifts = np.array(drifts)
                rows.append((f"{label}, 2 epochs (32 models)",
                             f"max |dw| / layer scale = {drifts.max():.1e} (model "
                             f"{drifts.argmax()}); {(drifts > 1e-4).sum()} of 32 above 1e-4; "
                             f"median {np.median(drifts):.1e}"))

        def resnet():
            variants = (("one model", dict(models=1)),
                        ("one model, cudnn.benchmark", dict(models=1, cudnn_benchmark=True)),
                        ("one model, torch.compile", dict(models=1, compiled="default")),
                        ("one model, torch.compile reduce-overhead (CUDA graphs)",
                         dict(models=1, compiled="reduce-overhead")),
                        ("one model, whole step one CUDA graph (GraphedTrainer, as zoo "
                         "generate trains)",
                         dict(models=1, graphed=True)),
                        ("4 models on 4 streams, each step one CUDA graph",
                         dict(models=4, graphed=True)),
                        ("4 models on 4 streams", dict(models=4)))
            for label, kwargs in variants:
                images_s, tflops, busy = resnet18_throughput(**kwargs)
                share = f"{100 * tflops / peak:.1f}% of {peak:.0f}" if peak else "peak unknown"
                busy_text = "" if np.isnan(busy) else f", GPU busy {100 * busy:.0f}%"
                rows.append((f"ResNet-18 CIFAR-10 training (bf16), {label}",
                             f"{images_s:,.0f} images/s, {tflops:.0f} TFLOP/s = {share} TFLOP/s"
                             f"{busy_text}"))

        def kernels():
            from modelzoo.train.grouped import CONV_KERNELS

            for part in [f"step-{kernels}" for kernels in CONV_KERNELS] + ["evaluation"]:
                print(f"population of {args.models}, kernels of the {part}:", flush=True)
                print(population_kernels(args.models, part), flush=True)

        def hyperrep():
            for mode, (tokens_s, tflops) in hyperrep_throughput(work).items():
                share = f" = {100 * tflops / peak:.2f}% MFU" if peak else ""
                rows.append((f"hyperrep train (digits-seed zoo, {mode} mode)",
                             f"{tokens_s:,.0f} tokens/s, {tflops:.2f} TFLOP/s{share}"))

        def tests():
            left = max(30.0, deadline - time.perf_counter())
            try:  # a hung test (a CUDA graph capture, say) must not take the other sections
                done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                       "no:cacheprovider", "tests/test_gpu.py", "-k", args.tests],
                                      cwd=ROOT, capture_output=True, text=True, timeout=left)
            except subprocess.TimeoutExpired as timeout:
                print((timeout.stdout or b"")[-3000:].decode(errors="replace"))
                rows.append(("tests/test_gpu.py", f"over {left:.0f} s (the deadline)"))
                return
            print(done.stdout[-3000:], done.stderr[-2000:])
            rows.append(("tests/test_gpu.py", done.stdout.strip().splitlines()[-1]))

        def profile():
            measured = profile_population(root, args.models)
            for k, v in measured.items():
                rows.append((f"population of {args.models}: {k}", f"{v:.3f}"))
            steps = {k: v for k, v in measured.items() if k.startswith("ms per training step")}
            step_ms = min(steps.values())
            nchw = {k: v for k, v in steps.items() if "(NCHW, " in k}
            fastest["kernels"] = min(nchw, key=nchw.get).split("(NCHW, ")[1].split(",")[0]
            eval_s = 7 * min(v for k, v in measured.items() if "of the test split" in k)
            minutes = (5000 * step_ms / 1000 + eval_s) * 50 * 1000 / args.models / 60
            rows.append(("MNIST-Seed 1000 x 50 epochs (from the fastest step and the fastest "
                         "test-split evaluation x 7 for 70k images: 5,000 steps + one evaluation "
                         "per epoch)", f"{minutes:.0f} min"))

        measurements = {"profile": profile, "drift": drift, "tests": tests, "resnet18": resnet,
                        "hyperrep": hyperrep, "alone": one_at_a_time, "generate": zoo_generate,
                        "kernels": kernels}
        for name_ in SECTIONS:
            if name_ in chosen:
                section(name_, measurements[name_])
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))


if __name__ == "__main__":
    main()
