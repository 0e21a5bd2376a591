"""Objectives of the remote-sensing models: heteroscedastic regression, MC dropout with uncertainty
filtering, and dynamic task weighting. (The contrastive NT-Xent is ``modelzoo.train.losses.nt_xent``.)
"""

import math

import torch
from torch import nn


def heteroscedastic_loss(mean: torch.Tensor, log_var: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """Mean of 0.5 * exp(-s) * (y - mu)^2 + 0.5 * s over the batch (s = predicted log variance)."""
    return (0.5 * torch.exp(-log_var) * (target - mean) ** 2 + 0.5 * log_var).mean()


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, inputs: dict[str, torch.Tensor], passes: int = 100,
                       generator_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MC-dropout prediction of a (mean, log_var) model: T passes with dropout on, BatchNorm frozen.

    Returns (predictive mean [B], predictive std [B]); the variance is the mean aleatoric variance
    exp(log_var) plus the variance of the pass means (epistemic). Seeded, model left in eval mode.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    means, variances = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        for _ in range(passes):
            out = model(**inputs)
            means.append(out["mean"])
            variances.append(out["log_var"].exp())
    model.eval()
    means, variances = torch.stack(means), torch.stack(variances)
    mean = means.mean(0)
    return mean, (variances.mean(0) + means.var(0, unbiased=False)).sqrt()


def keep_confident(std: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mask [B] of the predictions kept: predictive std at or below its ``quantile``."""
    return std <= torch.quantile(std, quantile)


class DynamicTaskWeighting:
    """Focal-style dynamic task prioritisation from per-task KPIs.

    For each task t, kappa_t is a KPI in [0, 1] (accuracy, rate of IoU >= T, rate of error <= T),
    smoothed by an exponential moving average kbar_t <- alpha * kappa_t + (1 - alpha) * kbar_t
    (the first value initialises it); the task's loss weight is
    w_t = -(1 - kbar_t)^gamma_t * log(kbar_t): a task that is still poor gets a large weight.
    ``fixed`` gives constant weights instead (the alternative, as published).
    """

    def __init__(self, tasks: list[str], alpha: float = 0.1, gamma: float | dict = 2.0,
                 fixed: dict[str, float] | None = None, eps: float = 1e-3):
        self.tasks, self.alpha, self.eps, self.fixed = list(tasks), alpha, eps, fixed
        self.gamma = gamma if isinstance(gamma, dict) else {t: gamma for t in tasks}
        self.kpi: dict[str, float | None] = {t: None for t in tasks}

    def update(self, kpis: dict[str, float]) -> None:
        for task, value in kpis.items():
            value = min(max(float(value), self.eps), 1.0 - self.eps)
            prev = self.kpi[task]
            self.kpi[task] = value if prev is None else self.alpha * value + (1 - self.alpha) * prev

    def weights(self) -> dict[str, float]:
        if self.fixed is not None:
            return {t: float(self.fixed[t]) for t in self.tasks}
        out = {}
        for task in self.tasks:
            k = 0.5 if self.kpi[task] is None else self.kpi[task]
            out[task] = -((1.0 - k) ** self.gamma[task]) * math.log(k)
        return out

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.weights()
        return sum(weights[t] * losses[t] for t in self.tasks)
