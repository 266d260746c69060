"""Job start-up benchmark: how long a fresh Python process takes to import what every ESPnet job imports.

Every training, statistics and decoding job of the recipe is a new process that imports one of the
project's task modules, and through it ``espnet2.tasks.asr`` / ``espnet2.tasks.mt`` with all of
ESPnet's class choices. On the demo's 2 cores most jobs run for minutes, but the many short ones
(statistics, sharded decoding, the tiny runs of the tests) are dominated by this start-up.

Measures, in one run (figures are printed and written to ``benchmarks/results/startup.{json,md}``):

1. **wall time** of ``python -c "import <module>"`` in fresh processes, ``--repeats`` times each
   (mean, min, max), for the project's task modules;
2. **where it goes**: the cumulative ``python -X importtime`` figures of a fixed list of packages
   (one process), to see which imports dominate.

``--overlay DIR`` repeats both with ``DIR`` first on ``PYTHONPATH``: the reference setting. The
project pins ``inflect==5.6.2`` (requirements.txt); ESPnet's own resolution installs inflect 7.x, so::

    pip install --no-deps --target /tmp/inflect7 inflect==7.6.0
    python benchmarks/startup.py --overlay /tmp/inflect7

compares the two in the same run and reports the ratio. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from espnet2_ext.utils.fileio import atomic_write_text  # noqa: E402

logger = logging.getLogger("benchmark")

MODULES = ("espnet2_ext.tasks.asr", "espnet2_ext.tasks.discrete_asr")
# Packages whose cumulative import time -X importtime reports (the largest parts measured here).
BREAKDOWN = ("torch", "transformers", "g2p_en", "inflect", "espnet2.tasks.abs_task", "espnet2.train.preprocessor",
             "espnet2.tasks.ssl", "espnet2.asr.encoder.beats_encoder", "espnet2.tasks.asr", "espnet2.tasks.mt")


def environment(overlay: str | None) -> dict[str, str]:
    """This process's environment with ``overlay`` (if any) and the repository first on PYTHONPATH."""
    env = dict(os.environ)
    parts = ([overlay] if overlay else []) + [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def import_seconds(module: str, env: dict[str, str]) -> float:
    """Wall seconds of one fresh ``python -c 'import module'``."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"startup.py: 'import {module}' failed (exit {proc.returncode}); is the project venv active "
                 f"(. ./path.sh)?\n{proc.stderr[-2000:]}")
    return seconds


def breakdown(module: str, env: dict[str, str]) -> dict[str, float]:
    """Cumulative import seconds of BREAKDOWN's packages (those imported) when importing ``module``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    found: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if name in BREAKDOWN and cumulative.isdigit():
            found[name] = int(cumulative) / 1e6
    return found


def measure(env: dict[str, str], repeats: int) -> dict:
    result: dict = {"modules": {}}
    for module in MODULES:
        times = [import_seconds(module, env) for _ in range(repeats)]
        result["modules"][module] = {"mean": statistics.mean(times), "min": min(times), "max": max(times),
                                     "runs": times}
        logger.info("import %s: mean %.2f s (min %.2f, max %.2f, %d runs)", module, statistics.mean(times),
                    min(times), max(times), repeats)
    result["breakdown"] = breakdown(MODULES[-1], env)
    for name, seconds in result["breakdown"].items():
        logger.info("  %-38s %.2f s", name, seconds)
    return result


def markdown(report: dict) -> str:
    lines = ["# Job start-up (benchmarks/startup.py)", "",
             f"{report['machine']}; {report['repeats']} fresh processes per row; mean (min-max) wall seconds.", ""]
    settings = [("project", report["project"])] + ([("overlay", report["overlay"])] if "overlay" in report else [])
    header = "| module | " + " | ".join(name for name, _ in settings) + (" | overlay / project |" if len(settings) > 1 else " |")
    lines += [header, "|---" * (len(settings) + 1 + (len(settings) > 1)) + "|"]
    for module in MODULES:
        cells = [f"{s['modules'][module]['mean']:.2f} ({s['modules'][module]['min']:.2f}-{s['modules'][module]['max']:.2f})"
                 for _, s in settings]
        ratio = ([f"{report['overlay']['modules'][module]['mean'] / report['project']['modules'][module]['mean']:.2f}"]
                 if len(settings) > 1 else [])
        lines.append(f"| `{module}` | " + " | ".join(cells + ratio) + " |")
    lines += ["", f"Cumulative import seconds inside `import {MODULES[-1]}` (`python -X importtime`, one process):", "",
              "| package | " + " | ".join(name for name, _ in settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for name in BREAKDOWN:
        if not any(name in s["breakdown"] for _, s in settings):
            continue  # imported by neither setting (the list covers both task modules)
        cells = [f"{s['breakdown'][name]:.2f}" if name in s["breakdown"] else "-" for _, s in settings]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    if "overlay" in report:
        lines += ["", f"Overlay: `{report['overlay_dir']}` first on PYTHONPATH ({report['overlay_note']})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overlay", default=None, help="a directory put first on PYTHONPATH for the reference rows")
    parser.add_argument("--overlay_note", default="the reference setting",
                        help="what the overlay holds, for the report")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "startup")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.overlay and not Path(args.overlay).is_dir():
        parser.error(f"--overlay {args.overlay}: not a directory")
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                               f"Python {platform.python_version()}", "repeats": args.repeats}
    logger.info("project environment")
    report["project"] = measure(environment(None), args.repeats)
    if args.overlay:
        logger.info("overlay %s", args.overlay)
        report["overlay"] = measure(environment(args.overlay), args.repeats)
        report["overlay_dir"], report["overlay_note"] = args.overlay, args.overlay_note
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
