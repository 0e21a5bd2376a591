"""Population training vs one model at a time: model-epochs per second on the same zoo.

    python -m benchmarks.bench_population [--arch cnn_s] [--models 64] [--alone 4] [--epochs 2]
        [--population-size 16,32] [--train-images 600] [--device cpu] [--rounds 1]

Both runs train configs of one architecture (Adam 1e-3, batch 10, every epoch evaluated on all
splits) in the same process: cnn_s and unterthiner_cnn on 28x28 digits, cnn_l on digits at
32x32 with the grey channel repeated to 3, tetris_mlp on Tetris. ``--population-size`` takes one
size or a comma list (default: the automatic size); each size is timed and compared with the same
one-at-a-time rate, after an untimed warm-up of both paths. ``--rounds N`` repeats the whole
comparison N times, alternating the two paths, so that each ratio compares runs minutes apart (a
shared 2-core machine drifts by up to 40 % within an hour) and the median ratio is reported.
Prints each rate, the ratio, and an estimate of the MNIST-Seed zoo (1,000 models x 50 epochs, 50k
training + 20k evaluation images) at the best population rate.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from modelzoo.data import create_dataset
from modelzoo.data.registry import Split
from modelzoo.runtime import keep_freed_memory
from modelzoo.specs import TrainingConfig
from modelzoo.train.alone import train_model
from modelzoo.train.population import auto_population_size, train_population_groups

ARCHITECTURES = {  # name -> (model kwargs, data set, its options)
    "cnn_s": ({"in_channels": 1}, "digits", {}),
    "unterthiner_cnn": ({"in_channels": 1}, "digits", {}),
    "cnn_l": ({"in_channels": 3}, "digits", {"resize": 32}),
    "tetris_mlp": ({}, "tetris", {}),
}


def bench_data(arch: str, train_images: int | None):
    kwargs, name, options = ARCHITECTURES[arch]
    data = create_dataset(name, **options)
    if kwargs.get("in_channels") == 3:
        data = dataclasses.replace(data, **{s: Split(getattr(data, s).x.expand(-1, 3, -1, -1)
                                                     .contiguous(), getattr(data, s).y)
                                            for s in ("train", "val", "test")})
    if train_images:
        data = dataclasses.replace(data, train=Split(data.train.x[:train_images],
                                                     data.train.y[:train_images]))
    return kwargs, data


def main() -> None:
    keep_freed_memory()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn_s", choices=sorted(ARCHITECTURES))
    parser.add_argument("--models", type=int, default=64, help="models in the population run")
    parser.add_argument("--alone", type=int, default=4, help="models trained one at a time")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--population-size", default=None, help="size or comma list")
    parser.add_argument("--train-images", type=int, default=None, help="first N training images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=1, help="alternating repeats (median ratio)")
    args = parser.parse_args()
    kwargs, data = bench_data(args.arch, args.train_images)
    configs = [TrainingConfig(seed=s, epochs=args.epochs, lr=1e-3, activation="tanh")
               for s in range(args.models)]
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    sizes = [int(s) for s in args.population_size.split(",")] if args.population_size else \
        [auto_population_size(args.arch, kwargs, configs[0], data.input_shape, device)]
    print(f"device: {device} ({torch.get_num_threads()} threads), {args.arch} on {data.name} "
          f"{tuple(data.input_shape)}, {len(data.train)} training images, {args.epochs} epochs")
    # untimed: the first model trained in a process runs about 15 % slower than the next ones
    # (measured, BENCHMARKS.md), which would favour the population
    warm = [c.model_copy(update={"epochs": 1}) for c in configs[:max(sizes)]]
    train_model(args.arch, kwargs, warm[0], data, device)
    train_population_groups(args.arch, kwargs, warm, data, str(device), max(sizes))
    sync()
    ratios: dict[int, list[float]] = {size: [] for size in sizes}
    best = 0.0
    for round_ in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {round_}")
        start = time.perf_counter()
        for config in configs[:args.alone]:
            train_model(args.arch, kwargs, config, data, device)
        sync()
        alone_rate = args.alone * args.epochs / (time.perf_counter() - start)
        print(f"one at a time : {alone_rate:8.2f} model-epochs/s ({args.alone} models)")
        for size in sizes:
            start = time.perf_counter()
            train_population_groups(args.arch, kwargs, configs, data, str(device), size)
            sync()
            rate = args.models * args.epochs / (time.perf_counter() - start)
            best = max(best, rate)
            ratios[size].append(rate / alone_rate)
            print(f"population    : {rate:8.2f} model-epochs/s ({args.models} models, population "
                  f"size {min(size, args.models)}): {rate / alone_rate:6.2f}x")
    if args.rounds > 1:
        for size, values in ratios.items():
            print(f"median ratio, population size {min(size, args.models)}: "
                  f"{statistics.median(values):.2f}x (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in values)})")
    images_here = len(data.train) + len(data.val) + len(data.test)
    estimate_min = 1000 * 50 * (50_000 + 20_000) / images_here / best / 60
    print(f"MNIST-Seed estimate (1000 models x 50 epochs) at the best rate: {estimate_min:,.0f} min")


if __name__ == "__main__":
    main()
