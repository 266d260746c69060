"""A separate learning rate for the SSL frontend's layer-weight logits (step 1).

:class:`LayerWeightsLR` is a mixin for an ESPnet task (``class ASRTask(LayerWeightsLR,
espnet_asr.ASRTask)``) that adds the option ``--layer_weights_lr_scale``: the learning rate of
:data:`LAYER_WEIGHTS_PARAM` is the optimiser's rate times this factor. The logits go into their own
parameter group, so every ESPnet scheduler (they all scale each group's base rate) applies its
warm-up and decay to both groups alike, and resuming from ``checkpoint.pth`` restores both.

Why: Adam moves a parameter by about the learning rate per update, so a few hundred updates at an
encoder's rate (1e-3) move the logits by a few tenths at most -- the softmax weights stay close to
uniform and say little about the layers. SUPERB-style runs of 100k+ updates do not need this; short
CPU runs do. Config example (``conf/step1/demo.yaml``)::

    optim: adam
    optim_conf: {lr: 1.0e-3}
    layer_weights_lr_scale: 20.0   # the logits learn at 2e-2
"""

from __future__ import annotations

import argparse
import logging

import torch
from espnet2.tasks.abs_task import optim_classes

logger = logging.getLogger(__name__)

LAYER_WEIGHTS_PARAM = "frontend.layer_weights"
"""Name of :class:`~espnet2_ext.frontend.SSLFrontend`'s layer-weight logits in an ESPnet model (and its checkpoints)."""


class LayerWeightsLR:
    """Task mixin: ``--layer_weights_lr_scale`` and the optimiser with the logits in their own group."""

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The base task's options plus ``--layer_weights_lr_scale``."""
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="espnet2_ext step 1")
        group.add_argument(
            "--layer_weights_lr_scale",
            type=float,
            default=1.0,
            help=f"learning rate of {LAYER_WEIGHTS_PARAM} (frontend ssl, layer_selection weighted) relative to "
            "optim_conf.lr; the scheduler scales both alike. 1.0: one parameter group, as in ESPnet",
        )

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> list[torch.optim.Optimizer]:
        """The base task's optimiser, with the layer-weight logits in their own group when scaled.

        With ``layer_weights_lr_scale`` 1 (the default) this is the base task's ``build_optimizers``.
        Otherwise the optimiser (``optim``, ``optim_conf``) gets two parameter groups: every other
        parameter as configured, and :data:`LAYER_WEIGHTS_PARAM` with ``lr`` times the scale and no
        weight decay (decay pulls the logits towards uniform weights, the harder the higher their
        rate, biasing exactly what step 1 reads out).

        Raises:
            ValueError: a scale that is not positive, a model without layer weights, or an option
                the split does not support (``sharded_ddp``, ``exclude_weight_decay``).
        """
        scale = getattr(args, "layer_weights_lr_scale", 1.0)
        # --collect_stats builds the model without its frontend (--input_size) and never steps
        if scale == 1.0 or getattr(args, "collect_stats", False):
            return super().build_optimizers(args, model)
        if not scale > 0:
            raise ValueError(f"--layer_weights_lr_scale must be positive, got {scale}")
        if getattr(args, "sharded_ddp", False) or getattr(args, "exclude_weight_decay", False):
            raise ValueError("--layer_weights_lr_scale cannot be combined with sharded_ddp or exclude_weight_decay")
        params = dict(model.named_parameters())
        layer_weights = params.pop(LAYER_WEIGHTS_PARAM, None)
        if layer_weights is None:
            raise ValueError(
                f"--layer_weights_lr_scale {scale}: the model has no {LAYER_WEIGHTS_PARAM} (that needs frontend "
                "ssl with layer_selection weighted); remove the option from the config"
            )
        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}, got {args.optim!r}")
        optim = optim_class(list(params.values()), **args.optim_conf)
        group = {"params": [layer_weights], "lr": optim.defaults["lr"] * scale}
        if "weight_decay" in optim.defaults:
            group["weight_decay"] = 0.0
        optim.add_param_group(group)
        logger.info("%s: learning rate %g (%g x %g)", LAYER_WEIGHTS_PARAM, group["lr"], scale, optim.defaults["lr"])
        return [optim]
