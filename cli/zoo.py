"""``zoo``: generate model zoos from specs; inspect, validate, export, sparsify, share (Hub) and
import archives."""

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cli.common import DEVICE_HELP, check_choice, progress_bar, resolve_device, user_errors
from modelzoo.errors import ZooError
from modelzoo.runtime import keep_freed_memory

app = typer.Typer(help="Generate, inspect and validate model zoos.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


@app.command()
@user_errors
def generate(
    spec: Path = typer.Argument(..., help="zoo spec (YAML)"),
    out: Path = typer.Option(..., "--out", help="archive directory to write"),
    data_root: Path | None = typer.Option(None, help="data folder (overrides dataset.root)"),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="require an existing partial archive"),
    population_size: int | None = typer.Option(
        None, min=1, help="models trained together (1 = one at a time); default: fits memory"),
    shard_size: int | None = typer.Option(None, min=1, help="models per shard file (default 100)"),
    fmt: str = typer.Option("hdf5", "--format", help="hdf5, or safetensors (hdf5 + export)"),
    backend: str = typer.Option("local", help="local or ray"),
    address: str | None = typer.Option(None, help="Ray cluster address (default: start locally)"),
    workers: int | None = typer.Option(None, min=1, help="CPUs of a locally started Ray instance"),
    task_threads: int | None = typer.Option(
        None, min=1, help="Ray: threads per task (default: this process's; fewer let tasks "
                          "run side by side)"),
):
    """Train every model of SPEC and store every epoch's state and metrics in OUT."""
    from modelzoo.archive.export import export_safetensors
    from modelzoo.generate import generate as run
    from modelzoo.specs import load_spec

    check_choice("--format", fmt, ("hdf5", "safetensors"))
    check_choice("--backend", backend, ("local", "ray"))
    if resume and not (out / "manifest.json").exists():
        raise ZooError(f"--resume: {out} holds no partial archive to resume")
    zoo_spec = load_spec(spec)
    device = resolve_device(device)
    with progress_bar("models") as bar:
        task = bar.add_task(f"{zoo_spec.name}", total=None)

        def on_shard(done: int, total: int) -> None:
            if bar.tasks[task].total is None:  # first call: models already done do not count in models/s
                bar.reset(task, total=total, completed=done)
            else:
                bar.update(task, completed=done)

        run(zoo_spec, out, data_root=data_root, device=device, population_size=population_size,
            shard_size=shard_size, on_shard=on_shard, backend=backend, address=address,
            ray_cpus=workers, task_threads=task_threads)
    if fmt == "safetensors":
        files = export_safetensors(out)
        print(f"exported {len(files)} safetensors files to {out / 'safetensors'}")
    print(f"wrote {out}")


def _summary(root: Path) -> dict:
    from modelzoo.archive import ArchiveReader

    zoo = ArchiveReader(root)
    manifest = zoo.manifest
    table = zoo.metadata
    metric = f"test_{zoo.primary_metric}"
    per_epoch = []
    for epoch, group in table.groupby("epoch"):
        acc = group[metric].to_numpy()
        acc = acc[~np.isnan(acc)]  # imported zoos: states their source lacks are NaN
        stats = {"mean": acc.mean(), "std": acc.std(), "min": acc.min(),
                 "median": np.median(acc), "max": acc.max()} if len(acc) else \
            dict.fromkeys(("mean", "std", "min", "median", "max"), np.nan)
        per_epoch.append({"epoch": int(epoch), "models": int(len(acc)),
                          **{k: float(v) for k, v in stats.items()}})
    factors = {f: {str(k): int(v) for k, v in
                   table[table.epoch == zoo.epochs[0]][f].value_counts(sort=False).items()}
               for f in zoo.factor_names}
    zoo.close()
    return {"name": zoo.name, "complete": zoo.complete, "models": len(zoo),
            "planned_models": manifest.n_models, "states": len(zoo.epochs),
            "epochs": zoo.epochs, "params": zoo.n_params,
            "architecture": {"name": manifest.architecture, "kwargs": manifest.architecture_kwargs},
            "dataset": manifest.dataset,
            "task": zoo.task, "metric": metric, f"{metric}_per_epoch": per_epoch,
            "factors": factors}


@app.command()
@user_errors
def info(root: Path = typer.Argument(..., help="archive directory"),
         as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Models, states, accuracy distribution per epoch and factors of an archive."""
    summary = _summary(root)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    console = Console()
    state = "complete" if summary["complete"] else \
        f"INCOMPLETE ({summary['models']}/{summary['planned_models']} models)"
    console.print(f"[bold]{summary['name']}[/]: {summary['models']} models x {summary['states']} "
                  f"states, {summary['params']:,} params ({summary['architecture']['name']} on "
                  f"{summary['dataset']}), {state}")
    title = "test accuracy" if summary["metric"] == "test_acc" else \
        f"{summary['metric']} ({summary['task']})"
    table = Table(title=f"{title} per epoch")
    for col in ("epoch", "models", "mean", "std", "min", "median", "max"):
        table.add_column(col, justify="right")
    for row in summary[f"{summary['metric']}_per_epoch"]:
        table.add_row(str(row["epoch"]), str(row["models"]),
                      *(f"{row[k]:.3f}" for k in ("mean", "std", "min", "median", "max")))
    console.print(table)
    for factor, counts in summary["factors"].items():
        shown = ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:12])
        more = f", ... {len(counts)} values" if len(counts) > 12 else ""
        console.print(f"factor [bold]{factor}[/]: {shown}{more}")


@app.command()
@user_errors
def validate(root: Path = typer.Argument(..., help="archive directory")):
    """Check checksums, shapes and NaNs; exit 1 naming the first broken item."""
    from modelzoo.archive import Manifest, validate_archive

    problems = validate_archive(root)
    if problems:
        for problem in problems:
            print(f"invalid: {problem}")
        raise typer.Exit(1)
    manifest = Manifest.read(root)
    print(f"ok: {root}: {len(manifest.shards)} shards, {manifest.n_models} models x "
          f"{len(manifest.epochs)} states, checksums match")


@app.command()
@user_errors
def export(root: Path = typer.Argument(..., help="archive directory")):
    """Write one safetensors file per model (config in its metadata) under ROOT/safetensors."""
    from modelzoo.archive.export import export_safetensors

    files = export_safetensors(root)
    print(f"exported {len(files)} safetensors files to {root / 'safetensors'}")


@app.command()
@user_errors
def upload(root: Path = typer.Argument(..., help="archive directory"),
           repo_id: str = typer.Argument(..., help="dataset repo on the Hub, e.g. user/mnist-seed"),
           private: bool = typer.Option(False, "--private", help="create the repo private"),
           revision: str | None = typer.Option(None, help="branch to commit to (default main)")):
    """Upload a complete zoo with a generated dataset card (token: HF_TOKEN or hf auth login)."""
    from modelzoo.hub import upload_zoo

    url = upload_zoo(root, repo_id, private, revision)
    print(f"uploaded {root} to {repo_id}: {url}")


@app.command()
@user_errors
def download(repo_id: str = typer.Argument(..., help="dataset repo on the Hub"),
             out: Path = typer.Option(..., "--out", help="new folder for the archive"),
             revision: str | None = typer.Option(None, help="branch, tag or commit"),
             include: list[str] = typer.Option(
                 [], help="only files matching this pattern (repeatable), e.g. 'shards/shard-00000.h5'")):
    """Download a zoo through the Hub cache (resumable, offline with HF_HUB_OFFLINE=1), verified."""
    from modelzoo.archive import ArchiveReader
    from modelzoo.hub import download_zoo

    download_zoo(repo_id, out, revision, include or None)
    with ArchiveReader(out) as zoo:
        state = "complete" if zoo.complete else "partial (--include)"
        print(f"downloaded {repo_id} to {out}: {len(zoo)} models x {len(zoo.epochs)} states, "
              f"{state}, checksums match")


@app.command()
@user_errors
def sparsify(root: Path = typer.Argument(..., help="archive directory"),
             method: str = typer.Option(
                 "magnitude", help="magnitude, structured (whole channels) or variational-dropout"),
             ratios: str = typer.Option("0.5,0.7,0.9", help="fractions of prunable weights to zero"),
             scope: str = typer.Option("global", help="global (all layers) or layer (each tensor)"),
             finetune_epochs: int = typer.Option(1, help="fine-tuning epochs of each twin"),
             from_epoch: int | None = typer.Option(None, help="state to prune (default: last)"),
             device: str = typer.Option("cpu", help=DEVICE_HELP),
             population_size: int | None = typer.Option(
                 None, min=1, help="models trained together (1 = one at a time); default: fits memory")):
    """Add sparsified twins of every model (pruned, fine-tuned with the mask held) to the zoo."""
    from modelzoo.archive import ArchiveReader
    from modelzoo.sparsify import METHODS, SCOPES
    from modelzoo.sparsify import sparsify as run_sparsify

    check_choice("--method", method, METHODS)
    check_choice("--scope", scope, SCOPES)
    try:
        values = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        raise ZooError(f"--ratios {ratios}: a comma-separated list of numbers") from None
    with ArchiveReader(root) as zoo:
        total = len(zoo) * len(values)
    with progress_bar("models") as bar:
        task = bar.add_task("sparsifying", total=total)
        names = run_sparsify(root, method, values, scope, finetune_epochs, from_epoch,
                             resolve_device(device), population_size,
                             on_shard=lambda name, n: bar.update(task, description=name, advance=n))
    with ArchiveReader(root) as zoo:
        table = zoo.metadata
        from_epoch = zoo.twin(names[0]).from_epoch
        dense = table[table["epoch"] == from_epoch]["test_acc"].to_numpy()
        print(f"dense test accuracy (epoch {from_epoch}): {dense.mean():.4f}")
        print("| twins | sparsity | test acc pruned | test acc fine-tuned | corr. with dense |")
        print("|---|---|---|---|---|")
        for name in names:
            twin = zoo.twin(name)
            acc = twin.metrics()["test_acc"]
            corr = np.corrcoef(dense, acc[:, -1])[0, 1] if len(dense) > 1 else float("nan")
            print(f"| {name} | {twin.sparsity().mean():.4f} | {acc[:, 0].mean():.4f} | "
                  f"{acc[:, -1].mean():.4f} | {corr:.3f} |")


@app.command("import")
@user_errors
def import_(path: Path = typer.Argument(..., help="the published zoo's folder"),
            format: str = typer.Option(..., "--format", help="modelzoos or unterthiner"),
            out: Path = typer.Option(..., "--out", help="new folder for the archive"),
            dataset: str | None = typer.Option(
                None, help="the zoo's data set, when the folder does not say (e.g. mnist)"),
            name: str | None = typer.Option(None, help="zoo name (default: the folder's name)")):
    """Convert a published zoo (Model Zoos Ray Tune folders, or Unterthiner et al.'s matrices)."""
    from modelzoo.importers import FORMATS, import_report, import_zoo

    check_choice("--format", format, FORMATS)
    import_zoo(path, format, out, dataset, name)
    for line in import_report(out):
        print(line)


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
