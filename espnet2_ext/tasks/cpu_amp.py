"""Mixed precision on CPU: the model's forward under ``torch.autocast("cpu", dtype=...)``.

ESPnet's ``--use_amp`` is CUDA's (``torch.cuda.amp``: its autocast and gradient scaler). On a CPU
with native bfloat16 instructions (AVX512-BF16 or AMX) oneDNN multiplies bfloat16 matrices several
times faster than float32 ones; on the demo machine (2 cores of an AMD EPYC with AVX512-BF16) a
1755x128 by 128x512 product took 2.41 ms in float32 and 0.51 ms in bfloat16, and a step-2 update
0.30 s instead of 0.22 s (benchmarks/results/cpu_amp.md). :class:`CPUAmp` is a task mixin
(``class ASRTask(CPUAmp, ..., espnet_asr.ASRTask)``, whose ``build_model`` ends with
``return cls.with_cpu_amp(model, args)``) adding one option::

    cpu_amp_dtype: bfloat16   # a training config (conf/step*/demo.yaml); default none

With it, every call of the model's ``forward`` -- ESPnet's trainer calls it for the training and the
validation batches -- runs under CPU autocast: matrix products and convolutions in bfloat16 with
float32 accumulation, losses (CTC, the attention decoder's KL divergence) and normalisations in
float32, as torch's autocast lists decide. Parameters, gradients, optimiser state and checkpoints
stay float32, so nothing downstream changes format; decoding (which calls ``encode`` and the
decoders, not ``forward``) and feature extraction stay float32. Ignored on a GPU (``--ngpu`` > 0),
where ``--use_amp`` is ESPnet's switch; on a CPU without native bfloat16 it is allowed but slower
than float32, and the training log says so.
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DTYPES = {"none": None, "bfloat16": torch.bfloat16}
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU advertises bfloat16 instructions oneDNN uses (None: unknown, no ``/proc/cpuinfo``)."""
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return None
    return any(flag in flags.split() for flag in _NATIVE_BF16_FLAGS)


def autocast_forward(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` with its ``forward`` (an instance attribute now) run under CPU autocast to ``dtype``."""
    forward = model.forward

    @functools.wraps(forward)
    def forward_in_autocast(*args, **kwargs):
        with torch.autocast("cpu", dtype=dtype):
            return forward(*args, **kwargs)

    model.forward = forward_in_autocast
    return model


class CPUAmp:
    """Task mixin: ``--cpu_amp_dtype`` (none | bfloat16); :meth:`with_cpu_amp` puts the model's forward under CPU autocast."""

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The base task's options plus ``--cpu_amp_dtype``."""
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="espnet2_ext mixed precision on CPU")
        group.add_argument(
            "--cpu_amp_dtype",
            choices=sorted(DTYPES),
            default="none",
            help="with --ngpu 0: run the model's forward (training and validation batches) under "
            "torch.autocast('cpu', dtype); parameters and checkpoints stay float32. Fast only on CPUs "
            "with native bfloat16 (AVX512-BF16, AMX). On GPUs use --use_amp",
        )

    @staticmethod
    def with_cpu_amp(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
        """``model`` (the task's ``build_model`` returns this), its forward under CPU autocast when
        ``cpu_amp_dtype`` is set and ``ngpu`` is 0."""
        dtype = DTYPES[getattr(args, "cpu_amp_dtype", "none") or "none"]
        if dtype is None or (getattr(args, "ngpu", 0) or 0) > 0:
            return model
        if cpu_has_native_bf16() is False:
            logger.warning("cpu_amp_dtype %s: this CPU has no native bfloat16 instructions (%s), so autocast "
                           "is slower than float32 here; set cpu_amp_dtype: none", args.cpu_amp_dtype,
                           " or ".join(_NATIVE_BF16_FLAGS))
        logger.info("the model's forward runs under torch.autocast('cpu', dtype=%s)", dtype)
        return autocast_forward(model, dtype)
