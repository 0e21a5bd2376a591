"""``hyperrep``: train hyper-representations on a zoo, embed models, probe their properties."""

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cli.common import DEVICE_HELP, check_choice, progress_bar, resolve_device, user_errors
from modelzoo.runtime import keep_freed_memory

app = typer.Typer(help="Hyper-representations: learn from the weights of a model zoo.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

COLUMNS = ("W", "S(W)", "S(W) weights", "S(W)+GBT", "embedding")
VIEWS_HELP = ("average each embedding over the model and views-1 random function-preserving "
              "permutations of it (default: 16 for runs trained with permutations, else 1)")


@app.command()
@user_errors
def train(zoo: Path = typer.Argument(..., help="zoo archive"),
          out: Path = typer.Option(..., "--out", help="run directory (resumed if it exists)"),
          epochs: int | None = typer.Option(None, help="training epochs"),
          gamma: float | None = typer.Option(None, help="1: contrastive, 0: reconstruction"),
          device: str = typer.Option("cpu", help=DEVICE_HELP),
          config: Path | None = typer.Option(None, help="YAML with TrainConfig keys")):
    """Train a transformer autoencoder on the zoo's train-split models (70/15/15 by model)."""
    from hyperrep.config import load_train_config
    from hyperrep.train import train as run_train

    cfg = load_train_config(config, {"epochs": epochs, "gamma": gamma})
    device = resolve_device(device)
    with progress_bar("epochs") as bar:
        task = bar.add_task("hyperrep", total=cfg.epochs)

        def on_epoch(epoch: int, record: dict) -> None:
            bar.update(task, completed=epoch,
                       description=f"hyperrep loss {record['loss']:.3f} val {record['val_loss']:.3f}")

        run_train(zoo, out, cfg, device, on_epoch)
    print(f"wrote {out}")


@app.command()
@user_errors
def embed(run: Path = typer.Argument(..., help="run directory"),
          zoo: Path = typer.Argument(..., help="zoo archive"),
          out: Path = typer.Option(..., "--out", help="embeddings file (.npz)"),
          device: str = typer.Option("cpu", help=DEVICE_HELP),
          views: int | None = typer.Option(None, help=VIEWS_HELP)):
    """Embed every (model, epoch) state of ZOO; writes embedding [N, L], model [N], epoch [N]."""
    from hyperrep.run import embed as run_embed

    result = run_embed(run, zoo, resolve_device(device), views)
    np.savez(out, **result)
    print(f"wrote {out}: {result['embedding'].shape[0]} states x {result['embedding'].shape[1]}")


@app.command()
@user_errors
def probe(run: Path = typer.Argument(..., help="run directory"),
          zoo: Path = typer.Argument(..., help="zoo archive"),
          json_out: Path | None = typer.Option(None, "--json", help="write results as JSON"),
          plot: Path | None = typer.Option(None, help="folder for plots"),
          views: int | None = typer.Option(None, help=VIEWS_HELP),
          split: str = typer.Option("test", help="split scored: test (reported figures) or val "
                                    "(choosing a config: the test split is not read)"),
          device: str = typer.Option("cpu", help=DEVICE_HELP)):
    """Predict properties from W, S(W) (with biases; 'weights': without, as published in 2021),
    S(W)+GBT and the embedding; print one table (and Kendall's tau of the headline metric)."""
    from hyperrep.probes import probe_table

    check_choice("--split", split, ("test", "val"))
    results = probe_table(run, zoo, plot, views, resolve_device(device), split)
    table = Table(title=f"probes on {split} models (R^2 for continuous, accuracy for categorical)")
    table.add_column("property")
    table.add_column("metric")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    for name, row in results.items():
        best = max(COLUMNS, key=lambda c: row[c])
        table.add_row(name, row["metric"], *(f"[bold]{row[c]:.3f}[/]" if c == best else
                                             f"{row[c]:.3f}" for c in COLUMNS))
        if "kendall_tau" in row:
            tau = row["kendall_tau"]
            best = max(COLUMNS, key=lambda c: tau[c])
            table.add_row(name, "Kendall tau", *(f"[bold]{tau[c]:.3f}[/]" if c == best else
                                                 f"{tau[c]:.3f}" for c in COLUMNS))
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {json_out}")
    if plot is not None:
        print(f"plots in {plot}")


@app.command()
@user_errors
def sample(run: Path = typer.Argument(..., help="run directory"),
           zoo: Path = typer.Argument(..., help="the zoo the run was trained on"),
           n: int = typer.Option(10, "--n", help="models per sampler (and per baseline)"),
           out: Path = typer.Option(..., "--out", help="new folder: sample archive + report"),
           sampler: list[str] = typer.Option(
               ["kde-anchor", "kde", "uniform"],
               help="kde-anchor, kde, uniform, kde-2022 (the published 2022 sampler) or sane "
                    "(SANE's token sampler; sane-mode runs); repeatable"),
           quantile: float = typer.Option(0.7, help="anchors: test accuracy >= this quantile"),
           bandwidth: str = typer.Option("0.2", help="KDE bandwidth, or scott / silverman"),
           joint: bool = typer.Option(True, "--joint/--per-dimension",
                                      help="KDE on whole latent vectors, or each dimension "
                                           "independently"),
           finetune_epochs: int = typer.Option(0, help="fine-tuning epochs after decoding"),
           keep_best: int | None = typer.Option(
               None, help="keep the best K of the n draws by zero-shot validation accuracy"),
           dataset: list[str] = typer.Option([], help="another data set to fine-tune on (transfer)"),
           data_root: Path | None = typer.Option(None, help="data folder for the data sets"),
           seed: int = typer.Option(0, help="seed of the draws"),
           device: str = typer.Option("cpu", help=DEVICE_HELP)):
    """Draw unseen models from the latent space, decode them and judge them against B_T and B_F."""
    from hyperrep.sample import SampleConfig
    from hyperrep.sample import sample as run_sample

    try:
        bw: float | str = float(bandwidth)
    except ValueError:
        bw = bandwidth
    cfg = SampleConfig.of(n=n, samplers=tuple(sampler), quantile=quantile, bandwidth=bw, joint=joint,
                       finetune_epochs=finetune_epochs, keep_best=keep_best, datasets=dataset,
                       seed=seed)
    device = resolve_device(device)
    with progress_bar("steps") as bar:
        task = bar.add_task("sampling", total=None)
        report = run_sample(run, zoo, out, cfg, device, data_root,
                            on_step=lambda msg: bar.update(task, description=msg, advance=1))
    from hyperrep.sample import report_table

    print(report_table(report))
    print(f"wrote {out} (archive of the samples, report.json, report.md, report.png)")


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
