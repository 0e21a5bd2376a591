"""One way for every training loop to record what it stores: each stored epoch's flat states and
metrics, turned into the archive's ``ModelRun`` per model at the end."""

from collections.abc import Iterable, Mapping

import numpy as np

from modelzoo.archive import METRICS, ModelRun


class RunRecorder:
    """Stored states and metrics of ``n_models`` models trained together (1 for one-at-a-time loops).

    ``add`` takes the states of one stored epoch (float32 [n_models, params], or [params] for one
    model) and each metric's values ([n_models], or a number for one model).
    """

    def __init__(self, metric_names: Iterable[str] = METRICS, n_models: int = 1):
        self.metric_names = list(metric_names)
        self.n_models = n_models
        self.states: list[np.ndarray] = []
        self.metrics: dict[str, list[np.ndarray]] = {m: [] for m in self.metric_names}

    def add(self, states: np.ndarray, metrics: Mapping[str, float | np.ndarray]) -> None:
        self.states.append(np.asarray(states).reshape(self.n_models, -1))
        for name in self.metric_names:
            self.metrics[name].append(np.asarray(metrics[name]).reshape(self.n_models))

    def add_splits(self, states: np.ndarray,
                   results: Mapping[str, tuple[float | np.ndarray, float | np.ndarray]]) -> None:
        """Classification: ``results`` maps each split to (mean NLL loss, accuracy)."""
        self.add(states, {f"{split}_{kind}": value for split, pair in results.items()
                          for kind, value in zip(("loss", "acc"), pair)})

    def runs(self, n: int | None = None) -> list[ModelRun]:
        """The first ``n`` (default: all) models' runs: states [stored epochs, params]."""
        stacked = np.stack(self.states, axis=1)  # [P, S, params]
        return [ModelRun(stacked[i], {m: np.array([v[i] for v in self.metrics[m]], dtype=np.float32)
                                      for m in self.metric_names})
                for i in range(self.n_models if n is None else n)]

    def run(self) -> ModelRun:
        """The run of a one-model recorder."""
        return self.runs(1)[0]
