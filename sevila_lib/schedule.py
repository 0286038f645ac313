"""The optimiser and learning-rate schedule of every training stage (official LAVIS runner): AdamW (0.9, 0.999) with
weight decay on parameters with ndim ≥ 2, and `linear_warmup_cosine_lr` set before every batch."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .train_config import TrainConfig


def decays(name: str, param: Tensor) -> bool:
    """The official rule (LAVIS `runner_base.optimizer`): decay parameters with ndim ≥ 2 unless the name marks a
    bias or a norm ("ln"/"bn" there, "norm" in transformers' names). The query tokens (1, Q, D) are decayed."""
    return param.ndim >= 2 and not any(tag in name.lower() for tag in ("bias", "norm", "ln", "bn"))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters: decayed and not decayed."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(module, config.weight_decay), lr=config.init_lr, betas=(0.9, 0.999))


def linear_warmup_cosine_lr(epoch: int, iteration: int, *, init_lr: float, min_lr: float, warmup_lr: float,
                            warmup_steps: int, max_epoch: int) -> float:
    """LAVIS `linear_warmup_cosine_lr`: epoch 0 warms up linearly per iteration from `warmup_lr` to `init_lr`
    over `warmup_steps` iterations, then stays at `init_lr`; epoch e ≥ 1 uses the per-epoch cosine
    (init_lr - min_lr)·½(1 + cos(π·e/max_epoch)) + min_lr. warmup_steps=0 means no warm-up."""
    if epoch == 0:
        if warmup_steps <= 0:
            return init_lr
        return min(init_lr, warmup_lr + (init_lr - warmup_lr) * iteration / warmup_steps)
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


class LinearWarmupCosineLR:
    """Sets the learning rate before every batch from (epoch, iteration), as the LAVIS runner does."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig):
        self.optimizer = optimizer
        self.kwargs = dict(init_lr=config.init_lr, min_lr=config.min_lr, warmup_lr=config.warmup_lr,
                           warmup_steps=config.warmup_steps, max_epoch=config.epochs)
        self.epoch, self.iteration = 0, 0
        self.lr = self.step(0, 0)

    def step(self, epoch: int, iteration: int) -> float:
        self.epoch, self.iteration = epoch, iteration
        self.lr = linear_warmup_cosine_lr(epoch, iteration, **self.kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "iteration": self.iteration, "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step(int(state["epoch"]), int(state["iteration"]))
