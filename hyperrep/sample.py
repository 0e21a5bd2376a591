"""Sampling unseen weights from a hyper-representation and judging them against trained baselines.

Path: embeddings of the run's training-split states -> a sampler draws latents [n, L] -> decoder ->
tokens [n, T, S] -> flat weights [n, P] with the layer-wise normalisation undone -> BatchNorm
statistics recalibrated on training images (architectures that have them) -> real models, evaluated
zero-shot (fine-tuning epoch 0) and fine-tuned for K epochs. The same is done for the baselines:
B_T (the architecture from random init, same epochs and data order) and B_F (the zoo's test-split
models at their last stored epoch, fine-tuned alike).

Samplers (``SAMPLERS``), fitted on the training-split embeddings:
- ``kde-anchor``: Gaussian KDE on the anchors, the states whose test accuracy is at or above the
  ``quantile`` of the training states' accuracies (0.7: the top 30 %) and whose model has the
  configuration the samples are loaded into (the most common one among the top states, seed aside;
  in a Seed zoo that is every model);
- ``kde``: Gaussian KDE on all training states;
- ``uniform``: uniform in the bounding box of all training embeddings (the floor);
- ``kde-2022``: the published 2022 sampler as its code does it: one Gaussian KDE per latent
  dimension on the anchors, every dimension sampled with the same random state, so a draw takes
  the same anchor in every dimension and adds the same noise value to each (an anchor moved
  along the diagonal; the paper's bandwidth is 0.002).
- ``sane``: SANE's sampler (sane-mode runs): one Gaussian KDE per token position over the
  anchors' token latents, every position sampled with the same random state as the published
  code does, so a draw takes one anchor's token latents and adds independent noise to each.

Sane-mode runs sample token latents [n, T, L] (flattened for the other samplers, which then work
on whole models' token latents) and decode them whole, or through halo windows when the run was
trained on windows (ResNet-18), so windowed sane runs decode into whole models.
``kde-anchor`` and ``kde`` are fitted jointly on the latent vectors (default) or with
``joint=False`` per dimension, each dimension drawn independently (mixing anchors; not what the
published code does). Draws are clipped to the tanh box. Per-dimension draws ignore that latent
dimensions are not independent (how each sampler fares: BENCHMARKS.md, sampling). The report gives
each method's distance to the nearest training state, so near-copies of training models show as such.
"""

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator
from sklearn.neighbors import KernelDensity
from torch import nn

from hyperrep.data import ZooTokens
from hyperrep.run import decode_tokens, encode_normalised, encode_tokens, open_run_tokens
from hyperrep.tokenise import detokenise
from modelzoo.archive import ArchiveWriter, Manifest, ModelRun, atomic_directory
from modelzoo.archive.export import export_safetensors
from modelzoo.data import DataSplits, create_dataset
from modelzoo.errors import ZooError
from modelzoo.specs import TrainingConfig, validated
from modelzoo.train import build_model, load_data, train_configs
from modelzoo.zoo import Zoo, open_zoo

SAMPLERS = ("kde-anchor", "kde", "uniform", "kde-2022", "sane")
DEFAULT_SAMPLERS = ("kde-anchor", "kde", "uniform")
BASELINES = ("B_T", "B_F")
SEED_OFFSET = 1_000_000  # fine-tuning seeds (data order) start here, away from zoo seeds


class SampleConfig(BaseModel):
    """What ``hyperrep sample`` draws and how the draws are judged (``SampleConfig.of`` validates)."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(10, ge=1)  # models kept per sampler (and per baseline)
    samplers: tuple[Literal["kde-anchor", "kde", "uniform", "kde-2022", "sane"], ...] = \
        DEFAULT_SAMPLERS
    quantile: float = Field(0.7, ge=0, lt=1)  # anchors: training states with test accuracy >= this quantile
    bandwidth: PositiveFloat | Literal["scott", "silverman"] = 0.2  # KDE bandwidth on the latents
    joint: bool = True  # KDE over the whole latent vector (False: each dimension independently)
    finetune_epochs: int = Field(0, ge=0)
    keep_best: int | None = Field(None, ge=1)  # keep the best k of the n draws (zero-shot val acc)
    datasets: list[str] = []  # extra data sets for transfer
    seed: int = 0

    @model_validator(mode="after")
    def _keep_best(self):
        if self.keep_best is not None and self.keep_best > self.n:
            raise ValueError(f"keep_best {self.keep_best} must be between 1 and n ({self.n})")
        return self

    @classmethod
    def of(cls, **values) -> "SampleConfig":
        return validated(cls, values, "hyperrep sample")


# -- samplers ------------------------------------------------------------------------------------
def anchor_rows(accuracy: np.ndarray, rows: np.ndarray, quantile: float) -> np.ndarray:
    """The rows (of ``rows``) whose accuracy is at or above the ``quantile`` of theirs."""
    threshold = np.quantile(accuracy[rows], quantile)
    return rows[accuracy[rows] >= threshold]


def draw_latents(sampler: str, fit_on: np.ndarray, box: np.ndarray, n: int,
                 bandwidth: float | str, joint: bool, seed: int,
                 token_latent: int | None = None) -> np.ndarray:
    """``n`` latents [n, L] from ``sampler`` fitted on ``fit_on`` [N, L]; ``box`` [N', L] bounds
    the uniform sampler. Sane-mode runs (``token_latent``: latent size per token) pass their token
    latents flattened [N, T * L], are drawn the same way and are not clipped. Same arguments,
    same draws."""
    rng = np.random.default_rng(seed)
    if sampler == "uniform":
        return rng.uniform(box.min(0), box.max(0), (n, box.shape[1])).astype(np.float32)
    if sampler == "sane":
        if token_latent is None:
            raise ZooError("the sane sampler draws token latents: it needs a sane-mode run")
        per_token = fit_on.reshape(len(fit_on), -1, token_latent)
        draws = np.stack([KernelDensity(bandwidth=bandwidth).fit(per_token[:, t])
                          .sample(n, random_state=seed) for t in range(per_token.shape[1])], 1)
        return draws.reshape(n, -1).astype(np.float32)
    if sampler == "kde-2022":  # one random state for every dimension, as the published code
        draws = np.stack([KernelDensity(bandwidth=bandwidth).fit(fit_on[:, [d]])
                          .sample(n, random_state=seed)[:, 0]
                          for d in range(fit_on.shape[1])], axis=1)
    elif joint:
        draws = KernelDensity(bandwidth=bandwidth).fit(fit_on).sample(n, random_state=seed)
    else:
        seeds = rng.integers(0, 2**31 - 1, fit_on.shape[1])
        draws = np.stack([KernelDensity(bandwidth=bandwidth).fit(fit_on[:, [d]])
                          .sample(n, random_state=int(seeds[d]))[:, 0]
                          for d in range(fit_on.shape[1])], axis=1)
    if token_latent is not None:  # sane-mode latents are unbounded
        return draws.astype(np.float32)
    return np.clip(draws, -1.0, 1.0).astype(np.float32)


# -- decoding ------------------------------------------------------------------------------------
@torch.no_grad()
def decode_latents(model: nn.Module, latents: np.ndarray, data: ZooTokens,
                   device: str = "cpu", batch: int = 256) -> np.ndarray:
    """Latents [n, L] (sane-mode runs: token latents flattened [n, T * L]) -> flat weights float32
    [n, P] in the zoo's units (normalisation undone)."""
    positions = data.tokens.positions.to(device)
    out = []
    for chunk in torch.from_numpy(latents).split(batch):
        if model.cfg.mode == "sane":
            tokens = decode_tokens(model, chunk.view(len(chunk), data.tokens.n_tokens, -1),
                                   data.tokens, device, batch)
        else:
            tokens = model.decode(chunk.to(device), positions).float().cpu()
        out.append(data.denormalise(detokenise(tokens, data.tokens, data.zoo.n_params)))
    return torch.cat(out).numpy()


def run_latents(model: nn.Module, normalised: torch.Tensor, data: ZooTokens,
                device: str = "cpu") -> np.ndarray:
    """What the samplers draw from: latents [N, L] (sane-mode runs: every token's latent,
    flattened [N, T * L])."""
    if model.cfg.mode == "sane":
        return encode_tokens(model, normalised, data.tokens, device).flatten(1).numpy()
    return encode_normalised(model, normalised, data.tokens, device)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor, batch: int = 256) -> bool:
    """Reset every BatchNorm's running statistics to those of ``images`` passed through the
    network in train mode: the average over batches of each batch's mean and (unbiased) variance,
    exact for one batch. Returns False (and changes nothing) without BatchNorm."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    net.train()
    for xb in images.split(batch):
        net(xb)
    net.eval()
    return True


def recalibrated(zoo: Zoo, config: TrainingConfig, flat: np.ndarray, images: torch.Tensor) -> np.ndarray:
    """Flat states [n, P] with BatchNorm statistics recalibrated (unchanged without BatchNorm)."""
    net = build_model(zoo.manifest.architecture, zoo.manifest.architecture_kwargs, config)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return flat
    out = flat.copy()
    for i, row in enumerate(flat):
        zoo.layout.load_into(net, row)
        recalibrate_batchnorm(net, images)
        out[i] = zoo.layout.flatten(net.state_dict())
    return out


def reconstruct(run: Path, zoo_path: Path, models: list[int], epoch: int,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(stored flat states [m, P], decode(encode(state)) [m, P]) of ``models`` at ``epoch``.

    For a canonical run the states come back aligned to its reference (the same functions)."""
    model, data, _ = open_run_tokens(run, zoo_path, device)
    with data.zoo as zoo:
        original = data.aligned(torch.from_numpy(np.stack([zoo.flat(m, epoch) for m in models])))
        latent = run_latents(model, data.normalise(original), data, device)
        return original.numpy(), decode_latents(model, latent, data, device)


def nearest_distance(data: ZooTokens, flat: np.ndarray, train_states: torch.Tensor) -> torch.Tensor:
    """Euclidean distance [n] from each state of ``flat`` [n, P] to its nearest training state
    (``train_states`` [N, P]), in layer-normalised units, after aligning the states as the run
    does (canonical runs: to the reference, so distances ignore hidden-unit order)."""
    states = data.normalise(data.aligned(torch.from_numpy(flat)))
    return torch.cdist(states.double(), train_states.double()).min(1).values


# -- judging -------------------------------------------------------------------------------------
def base_config(zoo: Zoo, models: np.ndarray) -> TrainingConfig:
    """The most common training config (seed aside) among ``models``: what samples are loaded
    into and fine-tuned with."""
    counts = Counter(json.dumps({k: v for k, v in zoo.manifest.model_config(int(m)).items()
                                 if k != "seed"}, sort_keys=True) for m in models)
    return TrainingConfig.model_validate(json.loads(counts.most_common(1)[0][0]))


def same_config(config: TrainingConfig, base: TrainingConfig) -> bool:
    """Whether ``config`` is ``base`` up to the seed (and the stored epochs)."""
    ignore = {"seed", "save_epochs"}
    return config.model_dump(exclude=ignore) == base.model_dump(exclude=ignore)


def finetune_configs(configs: list[TrainingConfig], epochs: int, seeds: list[int]) -> list[TrainingConfig]:
    """Copies trained for ``epochs`` with every epoch stored and ``seeds`` (data order)."""
    return [c.model_copy(update={"epochs": epochs, "save_epochs": None, "seed": s})
            for c, s in zip(configs, seeds)]


def accuracy_curves(runs: list[ModelRun], split: str = "test") -> list[list[float]]:
    """Accuracy on ``split`` [epoch][model] of fine-tuned runs (epoch 0 = before fine-tuning)."""
    return np.stack([r.metrics[f"{split}_acc"] for r in runs], axis=1).tolist()


def sample(run: Path, zoo_path: Path, out: Path, cfg: SampleConfig, device: str = "cpu",
           data_root: Path | None = None,
           on_step: Callable[[str], None] | None = None) -> dict:
    """Draw, decode, judge and write: ``out`` becomes an archive of the sampled models (states =
    fine-tuning epochs 0..K on the zoo's data set, factor ``sampler``) with per-model safetensors,
    ``report.json``, ``report.md`` and ``report.png``. Returns the report.

    Everything is written under a hidden sibling folder and renamed into ``out`` at the end.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} exists and is not empty; choose a new --out")
    with open_zoo(zoo_path) as zoo:
        if zoo.task != "classification":
            raise ZooError(f"{zoo_path}: hyperrep sample supports classification zoos; this one "
                           f"is a {zoo.task!r} zoo")
    say = on_step or (lambda _msg: None)
    say("embedding the zoo")
    model, data, run_config = open_run_tokens(run, zoo_path, device)
    sane = model.cfg.mode == "sane"
    if model.cfg.window and not sane:
        data.zoo.close()
        raise ZooError(f"{run} encodes windows of {model.cfg.window} tokens into one latent each: "
                       f"windowed runs decode into whole models in sane mode (mode: sane)")
    if "sane" in cfg.samplers and not sane:
        data.zoo.close()
        raise ZooError(f"--sampler sane draws token latents: {run} is a compression-mode run")
    with data.zoo as zoo, atomic_directory(out) as partial:
        spec = zoo.spec
        own = load_data(spec, data_root)
        data_sets = {spec.dataset.name: own}
        for name in cfg.datasets:
            data_sets[name] = _transfer_data(name, data_root, own)
        embedding = run_latents(model, data.normalised(slice(None)), data, device)
        states = zoo.metadata.set_index(["model", "epoch"]).loc[
            list(zip(data.models.tolist(), data.sample_epochs.tolist()))]
        accuracy = states["test_acc"].to_numpy()
        val_accuracy = states["val_acc"].to_numpy() if "val_acc" in states else None  # imported
        train_rows = np.nonzero(np.isin(data.models, run_config["splits"]["train"]))[0]
        anchors = anchor_rows(accuracy, train_rows, cfg.quantile)
        base = base_config(zoo, np.unique(data.models[anchors]))
        anchors = anchors[[same_config(zoo.config(int(m)), base) for m in data.models[anchors]]]
        fit_on = {"kde-anchor": embedding[anchors], "kde-2022": embedding[anchors],
                  "sane": embedding[anchors],
                  "kde": embedding[train_rows],
                  "uniform": embedding[train_rows]}
        sampled: dict[str, np.ndarray] = {}
        for i, name in enumerate(cfg.samplers):
            say(f"drawing {name}")
            latents = draw_latents(name, fit_on[name], embedding[train_rows], cfg.n,
                                   cfg.bandwidth, cfg.joint, cfg.seed * 1000 + i,
                                   model.cfg.latent if sane else None)
            flat = recalibrated(zoo, base, decode_latents(model, latents, data, device),
                                own.train.x)
            if cfg.keep_best is not None:
                flat = _best_on_val(spec, base, flat, own, device, cfg.keep_best)
            sampled[name] = flat
        n_kept = cfg.keep_best or cfg.n
        seeds = [SEED_OFFSET + cfg.seed * 10_000 + i for i in range(n_kept)]
        test_models = [int(m) for m in run_config["splits"]["test"]
                       if int(m) not in data.left_out][:n_kept]
        finals = np.stack([zoo.flat(m, zoo.epochs[-1]) for m in test_models])
        methods = {name: ([base] * n_kept, flat) for name, flat in sampled.items()}
        methods["B_T"] = ([base] * n_kept, None)
        methods["B_F"] = ([zoo.config(m) for m in test_models], finals)
        train_states = data.normalised(train_rows)
        distances = {name: nearest_distance(data, initial, train_states).tolist()
                     for name, (_, initial) in methods.items() if initial is not None}
        accuracies: dict[str, dict[str, list]] = {}
        zero_shot_val: dict[str, list[float]] = {}  # own data set: what settings are chosen on
        sample_runs: list[ModelRun] = []
        for set_name, split_data in data_sets.items():
            accuracies[set_name] = {}
            for name, (configs, initial) in methods.items():
                say(f"{set_name}: {name}, {cfg.finetune_epochs} fine-tuning epochs")
                runs = train_configs(spec, finetune_configs(configs, cfg.finetune_epochs, seeds),
                                     split_data, device, initial=initial)
                accuracies[set_name][name] = accuracy_curves(runs)
                if split_data is own:
                    zero_shot_val[name] = accuracy_curves(runs, "val")[0]
                if split_data is own and name in sampled:
                    sample_runs.extend(runs)
        report = {
            "zoo": str(zoo_path), "run": str(run), "n": n_kept, "drawn_per_sampler": cfg.n,
            "selection": (f"best {cfg.keep_best} of {cfg.n} by zero-shot validation accuracy"
                          if cfg.keep_best else "none"),
            "samplers": list(cfg.samplers), "quantile": cfg.quantile, "bandwidth": cfg.bandwidth,
            "kde": "joint" if cfg.joint else "per-dimension",
            "finetune_epochs": cfg.finetune_epochs, "seed": cfg.seed,
            "anchors": int(len(anchors)), "anchors_mean_acc": float(accuracy[anchors].mean()),
            "anchors_mean_val_acc": (None if val_accuracy is None
                                     else float(val_accuracy[anchors].mean())),
            "zero_shot_val_accuracy": zero_shot_val,
            "base_config": base.model_dump(mode="json"),
            "accuracy": accuracies,
            "nearest_train_distance": distances,
            "summary": {s: {m: {"mean": np.mean(v, axis=1).tolist(),
                                "std": np.std(v, axis=1).tolist()} for m, v in per_method.items()}
                        for s, per_method in accuracies.items()},
        }
        say("writing the archive")
        _write_archive(partial, zoo, base, seeds, cfg, sample_runs, report)
        export_safetensors(partial)
        (partial / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (partial / "report.md").write_text(report_table(report) + "\n")
        plot_report(report, partial / "report.png")
    return report


def _transfer_data(name: str, data_root: Path | None, own: DataSplits) -> DataSplits:
    if name == own.name:
        raise ZooError(f"--dataset {name}: that is the zoo's own data set (its results are always "
                       f"reported); name another one")
    other = create_dataset(name, root=data_root)
    if other.input_shape != own.input_shape or len(other.classes) != len(own.classes):
        raise ZooError(f"--dataset {name}: inputs {other.input_shape} x {len(other.classes)} "
                       f"classes do not fit the zoo's {own.input_shape} x {len(own.classes)}")
    return other


def _best_on_val(spec, base: TrainingConfig, flat: np.ndarray, data: DataSplits, device: str,
                 k: int) -> np.ndarray:
    """The ``k`` states with the best zero-shot accuracy on the validation split."""
    runs = train_configs(spec, finetune_configs([base] * len(flat), 0, range(len(flat))), data,
                         device, initial=flat)
    order = np.argsort([-r.metrics["val_acc"][0] for r in runs], kind="stable")
    return flat[np.sort(order[:k])]


def _write_archive(root: Path, zoo: Zoo, base: TrainingConfig, seeds: list[int],
                   cfg: SampleConfig, runs: list[ModelRun], report: dict) -> None:
    models = [(base.model_copy(update={"epochs": cfg.finetune_epochs, "save_epochs": None,
                                       "seed": s}).model_dump(mode="json"), {"sampler": sampler})
              for sampler in cfg.samplers for s in seeds]
    fingerprint = json.dumps([zoo.manifest.fingerprint, report["run"], report["samplers"],
                              report["n"], report["bandwidth"], report["seed"]])
    writer = ArchiveWriter.create(root, Manifest.new(
        name=f"{zoo.name}-samples", fingerprint=fingerprint, spec=zoo.manifest.spec,
        architecture=zoo.manifest.architecture,
        architecture_kwargs=zoo.manifest.architecture_kwargs, layout=zoo.layout,
        epochs=list(range(cfg.finetune_epochs + 1)), factors=["sampler"], models=models,
        source={"kind": "hyperrep-samples", "zoo": zoo.name, "run": report["run"],
                "epochs": "fine-tuning epochs (0 = decoded, zero-shot)"}))
    writer.write_all(runs)


# -- reporting -----------------------------------------------------------------------------------
def report_table(report: dict) -> str:
    """Markdown table: mean +- std test accuracy per method and fine-tuning epoch, per data set."""
    lines = [f"anchors: {report['anchors']} states, mean test accuracy "
             f"{report['anchors_mean_acc']:.3f}; n = {report['n']} per method "
             f"({report['selection']}); KDE {report['kde']}, bandwidth {report['bandwidth']}"]
    for data_set, methods in report["summary"].items():
        epochs = len(next(iter(methods.values()))["mean"])
        lines += ["", f"test accuracy on {data_set}:", "",
                  "| method | " + " | ".join(f"epoch {e}" for e in range(epochs)) +
                  " | epoch 0 / anchors | nearest training state |",
                  "|---" * (epochs + 3) + "|"]
        for name, s in methods.items():
            cells = [f"{m:.3f} ± {d:.3f}" for m, d in zip(s["mean"], s["std"])]
            ratio = s["mean"][0] / report["anchors_mean_acc"]
            distance = report["nearest_train_distance"].get(name)
            near = "-" if distance is None else f"{np.mean(distance):.1f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.0%} | {near} |")
    lines += ["", "nearest training state: mean distance of a method's starting weights to the "
              "closest training-split state (layer-normalised, aligned as the run aligns); "
              "B_F, independently trained test-split models, is the scale of a new model."]
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    """Mean test accuracy (+- std) against fine-tuning epoch, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["summary"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, data_set in zip(axes[0], sets):
        for name, s in report["summary"][data_set].items():
            mean, std = np.array(s["mean"]), np.array(s["std"])
            epochs = np.arange(len(mean))
            ax.plot(epochs, mean, marker="o", label=name)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        if data_set == sets[0]:
            ax.axhline(report["anchors_mean_acc"], color="k", ls="--", lw=1, label="anchors")
        ax.set(title=data_set, xlabel="fine-tuning epoch", ylabel="test accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
