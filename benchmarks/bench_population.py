"""Population training vs one model at a time: model-epochs per second on the same CNN-s zoo.

    python -m benchmarks.bench_population [--models 64] [--epochs 2] [--device cpu]

Both runs train CNN-s configs on 28x28 digits (1,258 training images, batch 10, every epoch
evaluated on all splits) in the same process. Prints each rate, the ratio, and an estimate of the
MNIST-Seed zoo (1,000 models x 50 epochs, 50k training + 20k evaluation images) at the population rate.
"""

import argparse
import time

import torch

from modelzoo.data import create_dataset
from modelzoo.specs import TrainingConfig
from modelzoo.train.population import auto_population_size, train_population_groups
from modelzoo.train.single import train_model

ARCH, KWARGS = "cnn_s", {"in_channels": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64, help="models in the population run")
    parser.add_argument("--alone", type=int, default=4, help="models trained one at a time")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--population-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = create_dataset("digits")
    configs = [TrainingConfig(seed=s, epochs=args.epochs, lr=1e-3, activation="tanh")
               for s in range(args.models)]
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for config in configs[:args.alone]:
        train_model(ARCH, KWARGS, config, data, device)
    sync()
    alone_rate = args.alone * args.epochs / (time.perf_counter() - start)

    size = args.population_size or auto_population_size(ARCH, KWARGS, configs[0],
                                                        data.input_shape, device)
    start = time.perf_counter()
    train_population_groups(ARCH, KWARGS, configs, data, str(device), size)
    sync()
    pop_rate = args.models * args.epochs / (time.perf_counter() - start)

    images_here = len(data.train) + len(data.val) + len(data.test)
    mnist_scale = (50_000 + 20_000) / images_here
    estimate_min = 1000 * 50 * mnist_scale / pop_rate / 60
    print(f"device: {device} ({torch.get_num_threads()} threads), CNN-s on 28x28 digits, "
          f"{args.epochs} epochs")
    print(f"one at a time : {alone_rate:8.2f} model-epochs/s ({args.alone} models)")
    print(f"population    : {pop_rate:8.2f} model-epochs/s ({args.models} models, population "
          f"size {min(size, args.models)})")
    print(f"ratio         : {pop_rate / alone_rate:8.2f}x")
    print(f"MNIST-Seed estimate (1000 models x 50 epochs) at this rate: {estimate_min:,.0f} min")


if __name__ == "__main__":
    main()
