"""Training objectives beyond image classification, as zoo settings (``task:`` in a zoo spec).

- ``contrastive``: NT-Xent (temperature = the config's ``temperature``) between the two streams of a
  co-located pair (s1, s2). Metrics per split: ``loss`` (NT-Xent over evaluation chunks of 256) and
  ``probe_acc`` (a logistic-regression probe on the concatenated pooled features, fitted on the
  train split's ``label``; at epoch 0 it measures the random encoder).
- ``supervised``: DFC2020 heads: ``label: single`` (cross-entropy on the majority class), ``multi``
  (BCE on classes >= 10%, accuracy = mean per-label accuracy) or ``segmentation`` (per-pixel
  cross-entropy; ``acc`` = pixel accuracy, ``miou``). ``pretrained``: a contrastive zoo whose
  model i (last stored epoch) initialises model i's encoders; ``freeze: true`` = linear evaluation:
  only the head (``classifier``) trains, the encoders keep their weights and BatchNorm statistics
  (pre-trained, or random without ``pretrained``: the random-encoder baseline).
- ``multitask``: plume segmentation (BCE), generation regression (L1), fuel classification (CE),
  combined with ``DynamicTaskWeighting`` (KPIs: rate of IoU >= ``kpi_iou``, rate of absolute error
  <= ``kpi_mae``, accuracy) or fixed weights (the config's ``task_weighting``). Metrics per split:
  ``loss`` (unweighted sum), ``iou``, ``mae``, ``acc``; plus the weights ``weight_<task>``.
- ``heteroscedastic``: (mean, log variance) regression with the heteroscedastic loss; metrics per
  split from MC dropout (``mc_passes`` passes): ``loss`` (NLL in eval mode), ``r2``, ``mae``, ``mse``,
  the same on the ``keep_quantile`` most confident samples (``*_filtered``) and mean predictive ``std``.
Per stored epoch (0 = untrained) the flat state and these metrics are recorded, as for classifiers.
"""

import numpy as np
import torch
import torch.nn.functional as F

from modelzoo.archive import ArchiveReader, Layout
from modelzoo.data.task_data import TaskData, TaskSplit
from modelzoo.errors import ZooError
from modelzoo.specs import MULTITASKS, TaskSpec, TrainingConfig
from modelzoo.train.losses import nt_xent
from modelzoo.train.objectives import (
    DynamicTaskWeighting,
    heteroscedastic_loss,
    keep_confident,
    mc_dropout_predict,
)
from modelzoo.train.record import RunRecorder
from modelzoo.train.single import (
    build_model,
    epoch_batches,
    make_optimizer,
    make_scheduler,
    train_subset,
)

EVAL_CHUNK = 256
PROBE_C = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strength of the linear probe, chosen on val


def _inputs(batch: TaskSplit, data: TaskData) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in data.inputs}


def _iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of binary masks [B, ...]; 1 where both are empty."""
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    inter, union = (pred & target).sum(1).float(), (pred | target).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


class Objective:
    """Loss and metrics of one task for one model."""

    def __init__(self, task: TaskSpec, config: TrainingConfig, data: TaskData):
        self.task, self.config, self.data = task, config, data
        self.weighting = DynamicTaskWeighting(
            list(MULTITASKS), alpha=task.ema_alpha, gamma=task.focal_gamma,
            fixed=task.fixed_weights if config.task_weighting == "fixed" else None)

    # -- training -------------------------------------------------------------------------
    def loss(self, model, batch: TaskSplit) -> torch.Tensor:
        out = model(**_inputs(batch, self.data))
        name = self.task.name
        if name == "contrastive":
            return nt_xent(out["z1"], out["z2"], self.config.temperature)
        if name == "supervised":
            return self._supervised_loss(out["logits"], batch)
        if name == "heteroscedastic":
            return heteroscedastic_loss(out["mean"], out["log_var"], batch["no2"])
        losses = self._multitask_losses(out, batch)
        with torch.no_grad():
            self.weighting.update(self._kpis(out, batch))
        return self.weighting.combine(losses)

    def _supervised_loss(self, logits, batch):
        if self.task.label == "single":
            return F.cross_entropy(logits, batch["label"])
        if self.task.label == "multi":
            return F.binary_cross_entropy_with_logits(logits, batch["multilabel"])
        return F.cross_entropy(logits, batch["land_cover"])

    @staticmethod
    def _multitask_losses(out, batch) -> dict[str, torch.Tensor]:
        return {"segmentation": F.binary_cross_entropy_with_logits(out["segmentation"],
                                                                   batch["plume"]),
                "generation": F.l1_loss(out["generation"], batch["generation"]),
                "fuel": F.cross_entropy(out["fuel"], batch["fuel"])}

    def _kpis(self, out, batch) -> dict[str, float]:
        iou = _iou(out["segmentation"] > 0, batch["plume"] > 0.5)
        err = (out["generation"] - batch["generation"]).abs()
        return {"segmentation": (iou >= self.task.kpi_iou).float().mean().item(),
                "generation": (err <= self.task.kpi_mae).float().mean().item(),
                "fuel": (out["fuel"].argmax(-1) == batch["fuel"]).float().mean().item()}

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def metrics(self, model, splits: dict[str, TaskSplit]) -> dict[str, float]:
        """Every metric of the task; leaves ``model`` in eval mode."""
        model.eval()
        out = {}
        if self.task.name == "contrastive":
            out = self._contrastive_metrics(model, splits)
        else:
            for split_name, split in splits.items():
                values = getattr(self, f"_{self.task.name}_metrics")(model, split)
                out.update({f"{split_name}_{k}": v for k, v in values.items()})
        if self.task.name == "multitask":
            out.update({f"weight_{t}": w for t, w in self.weighting.weights().items()})
        return out

    def _outputs(self, model, split: TaskSplit) -> dict[str, torch.Tensor]:
        parts = [model(**_inputs(b, self.data)) for b in split.batches(EVAL_CHUNK)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _contrastive_metrics(self, model, splits):
        # imported here: only this probe needs scikit-learn, slow to import (BENCHMARKS.md)
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        out, features = {}, {}
        for split_name, split in splits.items():
            losses = []
            for batch in split.batches(EVAL_CHUNK):
                o = model(**_inputs(batch, self.data))
                if len(batch) > 1:
                    losses.append(nt_xent(o["z1"], o["z2"], self.config.temperature).item())
                features[split_name] = features.get(split_name, []) + \
                    [torch.cat([o["h1"], o["h2"]], 1).cpu()]
            out[f"{split_name}_loss"] = float(np.mean(losses))
        feats = {k: torch.cat(v).double().numpy() for k, v in features.items()}
        labels = {k: split["label"].cpu().numpy() for k, split in splits.items()}
        scaler = StandardScaler().fit(feats["train"])
        feats = {k: scaler.transform(v) for k, v in feats.items()}

        def fit(c):
            return LogisticRegression(max_iter=2000, C=c).fit(feats["train"], labels["train"])

        probe = max((fit(c) for c in PROBE_C), key=lambda p: p.score(feats["val"], labels["val"]))
        for split_name in splits:
            out[f"{split_name}_probe_acc"] = float(probe.score(feats[split_name],
                                                               labels[split_name]))
        return out

    def _supervised_metrics(self, model, split):
        logits = self._outputs(model, split)["logits"]
        loss = self._supervised_loss(logits, split).item()
        if self.task.label == "single":
            return {"loss": loss, "acc": (logits.argmax(-1) == split["label"]).float().mean().item()}
        if self.task.label == "multi":
            return {"loss": loss,
                    "acc": ((logits > 0).float() == split["multilabel"]).float().mean().item()}
        pred, target = logits.argmax(1), split["land_cover"]
        ious = [((pred == c) & (target == c)).sum().item() / union
                for c in range(logits.shape[1])
                if (union := ((pred == c) | (target == c)).sum().item()) > 0]
        return {"loss": loss, "acc": (pred == target).float().mean().item(),
                "miou": float(np.mean(ious))}

    def _multitask_metrics(self, model, split):
        o = self._outputs(model, split)
        losses = self._multitask_losses(o, split)
        return {"loss": sum(v.item() for v in losses.values()),
                "iou": _iou(o["segmentation"] > 0, split["plume"] > 0.5).mean().item(),
                "mae": (o["generation"] - split["generation"]).abs().mean().item(),
                "acc": (o["fuel"].argmax(-1) == split["fuel"]).float().mean().item()}

    def _heteroscedastic_metrics(self, model, split):
        o = self._outputs(model, split)
        y = split["no2"]
        values = {"loss": heteroscedastic_loss(o["mean"], o["log_var"], y).item()}
        mean, std = mc_dropout_predict(model, _inputs(split, self.data), self.task.mc_passes,
                                       generator_seed=self.config.seed)
        keep = keep_confident(std, self.task.keep_quantile)
        for suffix, m in (("", torch.ones_like(keep)), ("_filtered", keep)):
            err = (mean - y)[m]
            ss = ((y[m] - y[m].mean()) ** 2).sum().clamp_min(1e-12)
            values[f"r2{suffix}"] = (1 - (err ** 2).sum() / ss).item()
            values[f"mae{suffix}"] = err.abs().mean().item()
            values[f"mse{suffix}"] = (err ** 2).mean().item()
        values["std"] = std.mean().item()
        return values


def load_pretrained(model, task: TaskSpec, index: int) -> None:
    """Copy model ``index``'s last stored state of the ``pretrained`` zoo into the matching
    parameters of ``model`` (encoders, projections)."""
    with ArchiveReader(task.pretrained) as zoo:
        if index >= len(zoo):
            raise ZooError(f"pretrained zoo {task.pretrained} has {len(zoo)} models; model "
                           f"{index} has no pre-trained encoder")
        state = zoo.layout.unflatten(zoo.flat(int(zoo.model_ids[index]), zoo.epochs[-1]))
    own = model.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise ZooError(f"pretrained zoo {task.pretrained}: no parameter matches this architecture")
    model.load_state_dict(shared, strict=False)  # on purpose: only the matching tensors


def freeze_all_but_head(model) -> None:
    """Linear evaluation: every parameter outside ``classifier`` stops training."""
    if not hasattr(model, "classifier"):
        raise ZooError("task.freeze needs an architecture with a head (head: classification or "
                       "segmentation)")
    for name, param in model.named_parameters():
        if not name.startswith("classifier."):
            param.requires_grad_(False)


def train_task_model(arch: str, arch_kwargs: dict, config: TrainingConfig, data: TaskData,
                     task: TaskSpec, device: str | torch.device = "cpu", index: int = 0):
    """Train one model of a task zoo; returns a ``ModelRun`` (states, task metrics)."""
    device = torch.device(device)
    model = build_model(arch, arch_kwargs, config)
    layout = Layout.of(model)
    if task.pretrained:
        load_pretrained(model, task, index)
    if task.freeze:
        freeze_all_but_head(model)
    model = model.to(device)
    splits = data.on(device)
    objective = Objective(task, config, data)
    optimizer = make_optimizer(model, config)
    subset = train_subset(config, len(data.train)).to(device)
    scheduler = make_scheduler(optimizer, config, len(subset) // config.batch_size)
    recorder = RunRecorder(task.metric_names())
    stored = config.stored_epochs()

    def train_mode():
        model.train()
        if task.freeze:  # linear evaluation: frozen encoders keep their BatchNorm statistics
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()

    def record():
        recorder.add(layout.flatten(model.state_dict()), objective.metrics(model, splits))
        train_mode()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # dropout masks of this model
        if 0 in stored:
            record()
        train_mode()
        for epoch in range(1, config.epochs + 1):
            for idx in epoch_batches(config, subset, epoch):
                loss = objective.loss(model, splits["train"].take(idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            if epoch in stored:
                record()
    return recorder.run()
