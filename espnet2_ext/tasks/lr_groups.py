"""Separate learning rates for the SSL frontend's layer-weight logits (step 1) and its upstream (step 0).

:class:`LRGroups` is a mixin for an ESPnet task (``class ASRTask(LRGroups, espnet_asr.ASRTask)``)
that adds two options, each the learning rate of a set of parameters relative to the optimiser's:

- ``--layer_weights_lr_scale``: :data:`LAYER_WEIGHTS_PARAM`, the logits of the learnable weighted
  sum (step 1). Adam moves a parameter by about the learning rate per update, so a few hundred
  updates at an encoder's rate (1e-3) move the logits by a few tenths at most -- the softmax weights
  stay close to uniform and say little about the layers. SUPERB-style runs of 100k+ updates do not
  need this; short CPU runs do. The logits get no weight decay (decay pulls them towards uniform
  weights, the harder the higher their rate, biasing exactly what step 1 reads out).
- ``--upstream_lr_scale``: every parameter under :data:`UPSTREAM_PREFIX`, the SSL model being
  fine-tuned (step 0), while the new CTC head learns at the optimiser's rate. A fresh head
  learns slowly at a rate gentle enough for the pre-trained layers; until it has learned
  something, the gradients it sends into those layers are noise.

Each scaled set goes into its own parameter group, so every ESPnet scheduler (they all scale each
group's base rate) applies its warm-up and decay to all groups alike, and resuming from
``checkpoint.pth`` restores them. Config examples::

    optim: adam
    optim_conf: {lr: 1.0e-3}
    layer_weights_lr_scale: 20.0   # step 1 (conf/step1/demo.yaml): the logits learn at 2e-2
    upstream_lr_scale: 0.1         # step 0: the SSL model learns at 1e-4, the head at 1e-3
"""

from __future__ import annotations

import argparse
import logging

import torch
from espnet2.tasks.abs_task import optim_classes

logger = logging.getLogger(__name__)

LAYER_WEIGHTS_PARAM = "frontend.layer_weights"
"""Name of :class:`~espnet2_ext.frontend.SSLFrontend`'s layer-weight logits in an ESPnet model (and its checkpoints)."""
UPSTREAM_PREFIX = "frontend.upstream."
"""Prefix of the SSL upstream's parameter names in an ESPnet model with ``frontend: ssl``."""


class LRGroups:
    """Task mixin: ``--layer_weights_lr_scale``, ``--upstream_lr_scale`` and an optimiser with a group per scale."""

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The base task's options plus the two scales."""
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="espnet2_ext learning-rate groups")
        group.add_argument(
            "--layer_weights_lr_scale",
            type=float,
            default=1.0,
            help=f"learning rate of {LAYER_WEIGHTS_PARAM} (frontend ssl, layer_selection weighted) relative to "
            "optim_conf.lr, without weight decay; the scheduler scales all groups alike. 1.0: no group of its own",
        )
        group.add_argument(
            "--upstream_lr_scale",
            type=float,
            default=1.0,
            help=f"learning rate of the parameters under {UPSTREAM_PREFIX} (frontend ssl, freeze_upstream false) "
            "relative to optim_conf.lr; the scheduler scales all groups alike. 1.0: no group of its own",
        )

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> list[torch.optim.Optimizer]:
        """The base task's optimiser, with a parameter group per scale that is not 1.

        With both scales 1 (the default) this is the base task's ``build_optimizers``. Otherwise the
        optimiser (``optim``, ``optim_conf``) gets its configured group with every other parameter,
        then the layer-weight logits (rate x ``layer_weights_lr_scale``, no weight decay), then the
        trainable upstream parameters (rate x ``upstream_lr_scale``).

        Raises:
            ValueError: a scale that is not positive, a model without the parameters a scale names
                (no layer weights; no trainable upstream), or an option the split does not support
                (``sharded_ddp``, ``exclude_weight_decay``).
        """
        scales = {"layer_weights": getattr(args, "layer_weights_lr_scale", 1.0),
                  "upstream": getattr(args, "upstream_lr_scale", 1.0)}
        # --collect_stats builds the model without its frontend (--input_size) and never steps
        if all(s == 1.0 for s in scales.values()) or getattr(args, "collect_stats", False):
            return super().build_optimizers(args, model)
        for name, scale in scales.items():
            if not scale > 0:
                raise ValueError(f"--{name}_lr_scale must be positive, got {scale}")
        if getattr(args, "sharded_ddp", False) or getattr(args, "exclude_weight_decay", False):
            raise ValueError("--layer_weights_lr_scale / --upstream_lr_scale cannot be combined with sharded_ddp or "
                             "exclude_weight_decay")
        params = dict(model.named_parameters())
        groups = []
        if scales["layer_weights"] != 1.0:
            if LAYER_WEIGHTS_PARAM not in params:
                raise ValueError(
                    f"--layer_weights_lr_scale {scales['layer_weights']}: the model has no {LAYER_WEIGHTS_PARAM} "
                    "(that needs frontend ssl with layer_selection weighted); remove the option from the config"
                )
            groups.append(("layer_weights", [params.pop(LAYER_WEIGHTS_PARAM)], {"weight_decay": 0.0}))
        if scales["upstream"] != 1.0:
            upstream = [params.pop(k) for k in [k for k in params if k.startswith(UPSTREAM_PREFIX)]]
            if not any(p.requires_grad for p in upstream):
                raise ValueError(
                    f"--upstream_lr_scale {scales['upstream']}: the model has no trainable {UPSTREAM_PREFIX}* "
                    "parameters (that needs frontend ssl with freeze_upstream false); remove the option from the config"
                )
            groups.append(("upstream", upstream, {}))
        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}, got {args.optim!r}")
        optim = optim_class(list(params.values()), **args.optim_conf)
        for name, group_params, extra in groups:
            group = {"params": group_params, "lr": optim.defaults["lr"] * scales[name]}
            group.update({k: v for k, v in extra.items() if k in optim.defaults})
            optim.add_param_group(group)
            logger.info("%s parameters (%d tensors): learning rate %g (%g x %g)", name, len(group_params), group["lr"],
                        scales[name], optim.defaults["lr"])
        return [optim]
