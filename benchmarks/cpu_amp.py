"""Training-update benchmark on CPU: bfloat16 autocast (``cpu_amp_dtype``) and thread counts against float32.

The demo's three trainings, built by the project's tasks from their configs (``conf/step{0,1,2}/demo.yaml``;
steps 0-1 on the kept demo SSL checkpoint), on synthetic batches of the configs' sizes; in the same
run, for each:

- the reference: float32 (ESPnet's CPU training, ``cpu_amp_dtype: none``), 1 thread;
- ``cpu_amp_dtype: bfloat16`` (:mod:`espnet2_ext.tasks.cpu_amp`), 1 thread;
- both with 2 threads, which the recipe gave one training before ``--parallel_chains`` (step 0).

A figure is the median wall time of one update (forward, backward, gradient clipping, Adam step)
over ``--updates`` updates after 2 warm-up updates. Also one matrix product of the step-2 encoder's
shape, float32 against bfloat16. Printed and written to ``benchmarks/results/cpu_amp.{json,md}``.

Usage::

    python benchmarks/cpu_amp.py              # ~3 minutes on 2 idle cores
    python benchmarks/cpu_amp.py --updates 3  # quicker, noisier

Run it on an idle machine: the 2-thread rows need both cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from espnet2_ext.tasks.cpu_amp import cpu_has_native_bf16  # noqa: E402
from espnet2_ext.utils.fileio import atomic_write_text  # noqa: E402

logger = logging.getLogger("benchmark")

DEMO_SSL = {"name": "hf_wav2vec2_custom", "path": str(REPO_ROOT / "egs2/demo/asr2/pretrained/demo_ssl"),
            "cache_dir": None}
CHARS = ["<blank>", "<unk>", "<space>"] + [chr(c) for c in range(0x41, 0x5B)] + [chr(c) for c in range(0x430, 0x450)] \
    + ["<sos/eos>"]
# Batches of the demo configs' sizes: step 0 batch_bins 800000 samples (50 s), step 1 400000 (25 s),
# step 2 batch_bins 2250 (~13 utterances of ~135 source units and ~47 characters).
STEPS = {
    "step0": {"config": "conf/step0/demo.yaml", "utts": 8, "seconds": 6.25, "chars": 80},
    "step1": {"config": "conf/step1/demo.yaml", "utts": 4, "seconds": 6.25, "chars": 80},
    "step2": {"config": "conf/step2/demo.yaml", "utts": 13, "units": 135, "chars": 47},
}


def build(step: str, amp: str) -> tuple[torch.nn.Module, dict]:
    """The step's model from its demo config (``cpu_amp_dtype`` = ``amp``) and one synthetic batch."""
    spec = STEPS[step]
    g = torch.Generator().manual_seed(0)
    text = torch.randint(2, len(CHARS) - 1, (spec["utts"], spec["chars"]), generator=g)
    text_lengths = torch.full((spec["utts"],), spec["chars"])
    if step == "step2":
        from espnet2_ext.tasks.discrete_asr import DiscreteASRTask as Task
    else:
        from espnet2_ext.tasks.asr import ASRTask as Task
    args = Task.get_parser().parse_args(["--config", str(REPO_ROOT / spec["config"]), "--cpu_amp_dtype", amp])
    args.token_list = CHARS
    if step == "step2":
        args.src_token_list = ["<blank>", "<unk>"] + [chr(0x4E00 + i) for i in range(500)] + ["<sos/eos>"]
        src = torch.randint(2, 502, (spec["utts"], spec["units"]), generator=g)
        batch = {"src_text": src, "src_text_lengths": torch.full((spec["utts"],), spec["units"]),
                 "text": text, "text_lengths": text_lengths}
    else:
        args.frontend_conf = {**args.frontend_conf, "upstream": DEMO_SSL}
        samples = int(spec["seconds"] * 16000)
        batch = {"speech": torch.randn(spec["utts"], samples, generator=g) * 0.1,
                 "speech_lengths": torch.full((spec["utts"],), samples), "text": text, "text_lengths": text_lengths}
    model = Task.build_model(args)
    model.train()
    return model, batch


def update_seconds(step: str, amp: str, threads: int, updates: int) -> float:
    """Median seconds of one training update of ``step`` with ``amp`` on ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, batch = build(step, amp)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=1e-4)
    times = []
    for i in range(updates + 2):
        start = time.perf_counter()
        loss, _, _ = model(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optim.step()
        optim.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_seconds(dtype: torch.dtype, repeats: int = 200) -> float:
    """Seconds of one 1755x128 by 128x512 product (a step-2 batch through a 512-unit layer), 1 thread."""
    torch.set_num_threads(1)
    a, w = torch.randn(1755, 128).to(dtype), torch.randn(512, 128).to(dtype)
    for _ in range(5):
        torch.nn.functional.linear(a, w)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(a, w)
    return (time.perf_counter() - start) / repeats


def markdown(report: dict) -> str:
    lines = ["# Training updates on CPU: bfloat16 autocast and threads (benchmarks/cpu_amp.py)", "",
             f"{report['machine']}; native bfloat16: {report['native_bf16']}. Median seconds of one update "
             f"({report['updates']} after 2 warm-up ones) of the demo configs' models on synthetic batches of "
             "their sizes; ratio = float32 1 thread / that setting.", "",
             "| training | float32, 1 thread | bfloat16, 1 thread | float32, 2 threads | bfloat16, 2 threads |",
             "|---|---:|---:|---:|---:|"]
    for step, row in report["steps"].items():
        ref = row["none/1"]
        cells = [f"{row[k]:.3f} ({ref / row[k]:.2f}x)" for k in ("none/1", "bfloat16/1", "none/2", "bfloat16/2")]
        lines.append(f"| {step} ({STEPS[step]['config']}) | " + " | ".join(cells) + " |")
    g = report["gemm"]
    lines += ["", f"One 1755x128 by 128x512 matrix product, 1 thread: float32 {g['float32'] * 1e3:.2f} ms "
              f"({g['float32_gflops']:.0f} GFLOP/s), bfloat16 {g['bfloat16'] * 1e3:.2f} ms "
              f"({g['bfloat16_gflops']:.0f} GFLOP/s): {g['float32'] / g['bfloat16']:.1f}x."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu_amp")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                               f"torch {torch.__version__}", "native_bf16": cpu_has_native_bf16(),
                    "updates": args.updates, "steps": {}}
    flops = 2 * 1755 * 128 * 512
    gemm = {"float32": gemm_seconds(torch.float32), "bfloat16": gemm_seconds(torch.bfloat16)}
    gemm |= {f"{k}_gflops": flops / v / 1e9 for k, v in list(gemm.items())}
    report["gemm"] = gemm
    logger.info("GEMM: float32 %.2f ms, bfloat16 %.2f ms", gemm["float32"] * 1e3, gemm["bfloat16"] * 1e3)
    for step in STEPS:
        row = {}
        for amp in ("none", "bfloat16"):
            for threads in (1, 2):
                row[f"{amp}/{threads}"] = update_seconds(step, amp, threads, args.updates)
                logger.info("%s %s %d thread(s): %.3f s per update", step, amp, threads, row[f"{amp}/{threads}"])
        report["steps"][step] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
