"""The hyper-representation objective: contrastive NT-Xent plus masked reconstruction MSE."""

import torch

from modelzoo.train.losses import nt_xent


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) token values; mask [T, S] or [B, T, S] bool."""
    diff = (pred - target)[mask.expand_as(pred)] if mask.dim() == 3 else (pred - target)[:, mask]
    return diff.pow(2).mean()


def combined_loss(gamma: float, proj1, proj2, rec1, rec2, target1, target2, mask,
                  temperature: float = 0.1):
    """gamma * NT-Xent + (1 - gamma) * reconstruction MSE; returns (total, contrastive, mse)."""
    contrastive = nt_xent(proj1, proj2, temperature) if gamma > 0 else proj1.new_zeros(())
    mse = 0.5 * (masked_mse(rec1, target1, mask) + masked_mse(rec2, target2, mask)) \
        if gamma < 1 else proj1.new_zeros(())
    return gamma * contrastive + (1 - gamma) * mse, contrastive, mse
