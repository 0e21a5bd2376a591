"""Contrastive (NT-Xent) and masked reconstruction losses."""

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent for two views [B, D]: each pair is positive, the other 2B-2 negative."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


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
