"""Linear probes of model properties from W, S(W), S(W) of the weights only, S(W)+GBT and the
learned embedding.

Samples are (model, epoch) states; the split is by model (the run's 70/15/15 split), so no model
is in two splits. Continuous properties (test accuracy, generalisation gap, epoch, each varied
numeric factor): ridge regression on standardised features, alpha chosen on the validation split
from 1e3 down to 1e-5, R^2 on test. Categorical factors: logistic regression, C chosen on
validation, accuracy on test. S(W) + gradient-boosted trees is the strong non-linear baseline.
"""

import contextlib
import warnings
from pathlib import Path

import numpy as np
from scipy.linalg import LinAlgWarning
from scipy.stats import kendalltau
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler

from hyperrep.run import STAT_QUANTILES, embed_samples
from modelzoo.archive import Layout
from modelzoo.errors import ZooError

ALPHAS = [10.0 ** k for k in range(3, -6, -1)]


def weight_statistics(flat: np.ndarray, layout: Layout, biases: bool = True) -> np.ndarray:
    """S(W): per tensor (weights, biases separately): mean, variance, 1/25/50/75/99th percentile.
    ``biases=False``: weight tensors only (2+ dims), as the published 2021 baseline computes it;
    with biases it is the stronger baseline. The probes report both."""
    features = []
    for entry in layout.param_entries():
        if not biases and len(entry.shape) < 2:
            continue
        values = flat[:, entry.offset:entry.offset + entry.size]
        features += [values.mean(1), values.var(1)]
        features += list(np.percentile(values, STAT_QUANTILES, axis=1))
    return np.stack(features, axis=1).astype(np.float32)


def _ridge(x_tr, y_tr, x_va, y_va, x_ev) -> np.ndarray:
    """Predictions on ``x_ev`` of the ridge probe whose alpha scores best on validation."""
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_va, x_ev = (scaler.transform(x) for x in (x_tr, x_va, x_ev))
    best = max(ALPHAS, key=lambda a: r2_score(y_va, Ridge(alpha=a).fit(x_tr, y_tr).predict(x_va)))
    return Ridge(alpha=best).fit(x_tr, y_tr).predict(x_ev)


def training_row_space(x_tr: np.ndarray) -> np.ndarray | None:
    """Orthonormal columns [features, samples] whose span holds every training row of ``x_tr``
    [samples, features], or None when there are no more features than samples.

    An L2-penalised linear model with an unpenalised intercept has its optimal weights in the
    span of the training rows (a component orthogonal to all of them changes no training loss
    and only adds to the penalty), and an orthonormal change of basis keeps the penalty, so
    fitting on ``x @ basis`` has the same optimum in ``samples`` dimensions instead of
    ``features``. L-BFGS gets much closer to it there (BENCHMARKS.md, probes)."""
    if x_tr.shape[1] <= x_tr.shape[0]:
        return None
    return np.linalg.qr(x_tr.T)[0]


def _logistic(x_tr, y_tr, x_va, y_va, x_ev) -> np.ndarray:
    """Predictions on ``x_ev`` of the logistic probe whose C scores best on validation (fitted
    in the training rows' span when the features outnumber them: ``training_row_space``)."""
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_va, x_ev = (scaler.transform(x) for x in (x_tr, x_va, x_ev))
    basis = training_row_space(x_tr)
    if basis is not None:
        x_tr, x_va, x_ev = (x @ basis for x in (x_tr, x_va, x_ev))

    def fit(c):
        return LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_tr)

    best = max([1.0 / a for a in ALPHAS], key=lambda c: accuracy_score(y_va, fit(c).predict(x_va)))
    return fit(best).predict(x_ev)


def _gbt(kind, x_tr, y_tr, x_ev) -> np.ndarray:
    model = HistGradientBoostingRegressor(random_state=0) if kind == "r2" else \
        HistGradientBoostingClassifier(random_state=0)
    return model.fit(x_tr, y_tr).predict(x_ev)


def probe_targets(table, factor_names: list[str],
                  primary: str = "acc") -> dict[str, tuple[str, np.ndarray]]:
    """Properties to predict: name -> ('r2' | 'accuracy', values [N]).

    ``primary``: the zoo's per-split headline metric (test accuracy for classifiers, test R^2 or
    probe accuracy for remote-sensing tasks); ``gap`` is its train - test difference.
    """
    targets = {f"test_{primary}": ("r2", table[f"test_{primary}"].to_numpy(np.float64)),
               "gap": ("r2", table["gap"].to_numpy(np.float64))}
    if table["epoch"].nunique() > 1:
        targets["epoch"] = ("r2", table["epoch"].to_numpy(np.float64))
    for factor in factor_names:
        values = table[factor]
        if factor == "seed" or values.nunique() < 2:
            continue
        if values.dtype.kind in "if":
            targets[factor] = ("r2", np.log10(values.to_numpy(np.float64))
                               if factor in ("lr", "weight_decay") and (values > 0).all()
                               else values.to_numpy(np.float64))
        else:
            targets[factor] = ("accuracy", values.astype(str).to_numpy())
    return targets


def run_probes(features: dict[str, np.ndarray], targets: dict[str, tuple[str, np.ndarray]],
               split: dict[str, np.ndarray], gbt_on: str = "S(W)",
               evaluate: str = "test") -> dict:
    """Results shaped {property: {"metric": .., "<feature set>": score, "S(W)+GBT": score}}; the
    first property (the zoo's headline test metric) also holds "kendall_tau": {feature set: tau}
    between its predicted and true values.

    Every probe is fitted on the train split with its regularisation chosen on the validation
    split; ``evaluate`` is the split scored: "test" for reported figures, "val" for model
    selection (the test split is then not read at all).
    """
    if evaluate not in ("val", "test"):
        raise ValueError(f"evaluate must be 'val' or 'test', not {evaluate!r}")
    with quiet_probe_warnings():
        return _run_probes(features, targets, split, gbt_on, evaluate)


@contextlib.contextmanager
def quiet_probe_warnings():
    """Silence, for the probes only, what the regularisation sweeps are expected to raise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=LinAlgWarning)  # tiny alphas on wide W
        warnings.filterwarnings("ignore", category=ConvergenceWarning)  # tiny C on few samples
        warnings.filterwarnings("ignore", message="Singular matrix")  # ridge falls back to lstsq
        yield


def _run_probes(features, targets, split, gbt_on, evaluate) -> dict:
    results = {}
    tr, va, ev = split["train"], split["val"], split[evaluate]
    for i, (name, (metric, y)) in enumerate(targets.items()):
        row = {"metric": metric}
        if metric == "accuracy" and len(set(y[tr])) < 2:
            continue
        fit = _ridge if metric == "r2" else _logistic
        score = r2_score if metric == "r2" else accuracy_score
        predictions = {fname: fit(x[tr], y[tr], x[va], y[va], x[ev])
                       for fname, x in features.items()}
        predictions[f"{gbt_on}+GBT"] = _gbt(metric, features[gbt_on][tr], y[tr],
                                            features[gbt_on][ev])
        row.update({fname: float(score(y[ev], pred)) for fname, pred in predictions.items()})
        if i == 0 and metric == "r2":
            row["kendall_tau"] = {fname: float(kendalltau(y[ev], pred).statistic)
                                  for fname, pred in predictions.items()}
        results[name] = row
    return results


def plot_probes(folder, embedding: np.ndarray, targets: dict, split: dict,
                evaluate: str = "test") -> list:
    """predicted_vs_true.png (embedding probes on the ``evaluate`` split) and
    embedding_<property>.png (2-D PCA projection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    continuous = [(n, y) for n, (m, y) in targets.items() if m == "r2"]
    fig, axes = plt.subplots(1, len(continuous), figsize=(4 * len(continuous), 4), squeeze=False)
    for ax, (name, y) in zip(axes[0], continuous):
        tr, va, ev = split["train"], split["val"], split[evaluate]
        with quiet_probe_warnings():
            pred = _ridge(embedding[tr], y[tr], embedding[va], y[va], embedding[ev])
        ax.scatter(y[ev], pred, s=8, alpha=0.6)
        lo, hi = float(np.min(y)), float(np.max(y))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set(title=f"{name} ({evaluate} R^2 {r2_score(y[ev], pred):.2f})", xlabel="true",
               ylabel="predicted from embedding")
    fig.tight_layout()
    fig.savefig(folder / "predicted_vs_true.png", dpi=100)
    plt.close(fig)
    written.append(folder / "predicted_vs_true.png")
    projected = PCA(n_components=2, random_state=0).fit_transform(embedding)
    for name, (metric, y) in targets.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        if metric == "r2":
            points = ax.scatter(projected[:, 0], projected[:, 1], c=y, s=8, cmap="viridis")
            fig.colorbar(points, ax=ax, label=name)
        else:
            for value in sorted(set(y)):
                sel = y == value
                ax.scatter(projected[sel, 0], projected[sel, 1], s=8, label=str(value))
            ax.legend(fontsize=7)
        ax.set(title=f"embedding (PCA) coloured by {name}", xlabel="PC 1", ylabel="PC 2")
        fig.tight_layout()
        path = folder / f"embedding_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def probe_table(run: Path, zoo_path: Path, plot: Path | None = None, views: int | None = None,
                device: str = "cpu", evaluate: str = "test") -> dict:
    """Every probe of a run on a zoo: {property: {metric, W, S(W), S(W) weights, S(W)+GBT,
    embedding}} scored on the ``evaluate`` split (see ``run_probes``); the run's own model split
    when ``zoo_path`` is the run's zoo, else the zoo's own split. ``plot``: folder for the probe
    plots."""
    return probe_splits(run, zoo_path, (evaluate,), plot, views, device)[evaluate]


def probe_split_models(zoo, config: dict) -> dict[str, list[int]]:
    """The models of each split (train / val / test) that the probes of ``zoo`` use: the split
    stored in the run for the zoo it was trained on; any other zoo is split by its own models
    with the run's split seed (a zoo of another architecture is standardised on that split's
    train models, ``open_run_tokens``)."""
    if zoo.name == config.get("zoo_name") and zoo.n_params == config.get("n_params", zoo.n_params):
        splits = config["splits"]
    else:
        splits = zoo.split_models(config["train"]["split_seed"])
    return {k: [int(m) for m in v] for k, v in splits.items()}


def probe_splits(run: Path, zoo_path: Path, evaluate: tuple[str, ...] = ("val", "test"),
                 plot: Path | None = None, views: int | None = None,
                 device: str = "cpu") -> dict[str, dict]:
    """``probe_table`` for each split in ``evaluate`` ({split: table}), embedding the zoo once."""
    embedding, data, config = embed_samples(run, zoo_path, device, views=views)
    with data.zoo as zoo:
        flat = data.flat.numpy()
        table = zoo.metadata.set_index(["model", "epoch"], drop=False)
        table = table.loc[list(zip(data.models.tolist(), data.sample_epochs.tolist()))]
        splits = {k: np.nonzero(np.isin(data.models, v))[0]
                  for k, v in probe_split_models(zoo, config).items()}
        if any(len(v) == 0 for v in splits.values()):
            raise ZooError(f"{zoo_path}: too few models to probe ({len(zoo)}): every split "
                           f"(train / val / test) needs at least one")
        features = {"W": flat, "S(W)": weight_statistics(flat, zoo.layout),
                    "S(W) weights": weight_statistics(flat, zoo.layout, biases=False),
                    "embedding": embedding}
        factor_names, primary = zoo.factor_names, zoo.primary_metric
    targets = probe_targets(table, factor_names, primary)
    results = {split: run_probes(features, targets, splits, evaluate=split) for split in evaluate}
    if plot is not None:
        plot_probes(plot, embedding, targets, splits, evaluate[-1])
    return results
