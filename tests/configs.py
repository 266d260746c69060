"""Helpers for the tests that check the recipe's training configs (imported by test modules)."""

from __future__ import annotations

import argparse

import torch


def learning_rates(args: argparse.Namespace, steps: int) -> list[float]:
    """The learning rate at each of the first ``steps`` updates of a parsed training config.

    Builds the config's optimizer (on one dummy parameter) and scheduler with ESPnet's registries, so
    a misspelt optimizer or scheduler option fails here.

    Returns:
        ``steps`` rates, one per update.
    """
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    optimizer = optim_classes[args.optim]([torch.nn.Parameter(torch.zeros(1))], **args.optim_conf)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    rates = []
    for step in range(steps):
        scheduler.last_epoch = step
        rates.append(scheduler.get_lr()[0])
    return rates
