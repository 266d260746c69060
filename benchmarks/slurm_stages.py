"""Wall time per recipe stage, local backend vs SLURM backend, on the tiny recipe; and whether the outputs agree.

Runs stages 4..11 of ``conf/recipe/tiny.yaml`` twice from the same stages-1-3 work directory (copied
twice: ``data/`` without the token lists, ``exp/ssl``), once with ``--cmd_backend local`` and once
with ``--cmd_backend slurm`` against a real single-node SLURM (``local/slurm_local.sh``, started
here and stopped by PID at the end unless ``SLURM_CONF`` already points to a running one). Both runs
use the same ``--nj`` and options, one after the other. Per-stage wall times come from each
workdir's ``log/stage_times.tsv`` (whole seconds, as run.sh records them); the number of
``sbatch`` submissions is the number of task specs (``log/**/q/*.json``, one per array). The outputs
are compared with :func:`espnet2_ext.utils.workdir_diff.compare_workdirs` (job logs skipped).
``--workdirs LOCAL SLURM`` reports on two such runs made elsewhere instead of running (e.g. the
SLURM run of tests/test_slurm_recipe.py and the local run it compares with, the tests' shared
``tiny_recipe_4_13``, which went on to stages 12-13: their outputs are listed as only in LOCAL).

Writes ``benchmarks/results/slurm.{md,json}`` and prints the table.

Usage::

    python benchmarks/slurm_stages.py                     # builds stages 1-3 first (about a minute)
    python benchmarks/slurm_stages.py --base DIR          # reuse a tiny workdir with stages 1-3 done
    python benchmarks/slurm_stages.py --keep /tmp/slurm_bench   # keep both workdirs there
    python benchmarks/slurm_stages.py --workdirs LOCAL_WD SLURM_WD   # report only

On a machine shared with other work, run it under ``nice -n 19`` (the SLURM daemons it starts
inherit the niceness, and so do the tasks they run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from espnet2_ext.utils.fileio import atomic_write_text  # noqa: E402
from espnet2_ext.utils.workdir_diff import compare_workdirs  # noqa: E402

# as tests/test_recipe_e2e.py: two unit systems, step 1 on the fine-tuned upstream only
# (the two step-2 trainings run at once with one thread each on both backends: the same arithmetic)
OPTS = ["--unit_systems", "baseline twostep", "--step1_upstreams", "step0", "--train_threads", "1"]
STAGES = (4, 11)
# files that differ between any two runs, and why (tests/test_slurm_recipe.py checks the rest agrees)
WHY = {
    "unit_model.json": ": records the k-means fit's wall time (`fit_seconds`); the rest is equal",
    "layer_weights.png": ": the chart's title names the upstream's path inside the workdir (only the title's "
                         "pixel rows differ); the weights it draws, `layer_weights.json`, are identical",
}


def run_recipe(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run ``run.sh --config conf/recipe/tiny.yaml ARGS`` with its output in ``log``; exit when it fails."""
    with log.open("w") as f:
        r = subprocess.run([str(REPO_ROOT / "run.sh"), "--config", "conf/recipe/tiny.yaml", *args], cwd=REPO_ROOT,
                           env=env, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"run.sh {' '.join(args)} failed (exit {r.returncode}); see {log}")


def prepare(base: Path, wd: Path) -> None:
    """A fresh workdir with the stages-1-3 outputs of ``base`` (as tests/test_recipe_e2e.py copies them)."""
    shutil.copytree(base / "data", wd / "data", ignore=shutil.ignore_patterns("token_list"))
    shutil.copytree(base / "exp/ssl", wd / "exp/ssl")


def stage_times(wd: Path) -> dict[str, tuple[str, int]]:
    """Stage number -> (name, seconds) from run.sh's ``log/stage_times.tsv`` (the last run of each)."""
    out = {}
    for line in (wd / "log/stage_times.tsv").read_text().splitlines():
        n, name, seconds, _when = line.split("\t")
        out[n] = (name, int(seconds))
    return out


def run_both(base: Path | None, root: Path) -> tuple[Path, Path]:
    """Stages 4-11 with each backend in ``root/{local,slurm}`` (stages 1-3 from ``base`` or built in root)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    if base is None:
        base = root / "base"
        print(f"building stages 1-3 in {base}", file=sys.stderr)
        run_recipe(["--workdir", str(base), "--stop_stage", "3"], env, root / "base.log")

    slurm_state, own_slurm = None, "SLURM_CONF" not in env
    if own_slurm:
        slurm_state = root / "slurm_cluster"
        subprocess.run([str(REPO_ROOT / "local/slurm_local.sh"), "start", str(slurm_state)], check=True)
        env["SLURM_CONF"] = str(slurm_state / "slurm.conf")
    try:
        for backend in ("local", "slurm"):
            wd = root / backend
            shutil.rmtree(wd, ignore_errors=True)
            prepare(base, wd)
            print(f"stages {STAGES[0]}-{STAGES[1]} with --cmd_backend {backend} in {wd}", file=sys.stderr)
            run_recipe(["--workdir", str(wd), "--stage", str(STAGES[0]), "--stop_stage", str(STAGES[1]),
                        "--cmd_backend", backend, *OPTS], env, root / f"{backend}.log")
    finally:
        if own_slurm:
            subprocess.run([str(REPO_ROOT / "local/slurm_local.sh"), "stop", str(slurm_state)], check=False)
    return root / "local", root / "slurm"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, help="tiny workdir with stages 1-3 done (default: build one)")
    p.add_argument("--keep", type=Path, help="put the work directories here and keep them")
    p.add_argument("--workdirs", type=Path, nargs=2, metavar=("LOCAL", "SLURM"),
                   help="report on these two finished runs of stages 4-11 instead of running")
    p.add_argument("--note", default="", help="a sentence for the report (e.g. how --workdirs were made)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/slurm")
    args = p.parse_args()

    root = None
    if args.workdirs:
        local, slurm = args.workdirs
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="slurm_bench_"))
        root.mkdir(parents=True, exist_ok=True)
        local, slurm = run_both(args.base, root)

    times = {"local": stage_times(local), "slurm": stage_times(slurm)}
    expected = [str(n) for n in range(STAGES[0], STAGES[1] + 1)]
    for b, t in times.items():
        if sorted(t, key=int) != expected:
            sys.exit(f"{b}: log/stage_times.tsv has stages {sorted(t, key=int)}, not {STAGES[0]}-{STAGES[1]}")
    totals = {b: sum(s for _name, s in t.values()) for b, t in times.items()}
    submissions = len(list(slurm.glob("log/**/q/*.json")))
    diff = compare_workdirs(local, slurm)
    load = os.getloadavg()
    rows = []
    for n, (name, local_s) in times["local"].items():
        slurm_s = times["slurm"][n][1]
        rows.append({"stage": int(n), "name": name, "local_s": local_s, "slurm_s": slurm_s})
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at the end",
        "options": ["--config", "conf/recipe/tiny.yaml", *OPTS],
        "workdirs": [str(local), str(slurm)],
        "stages": rows,
        "total_s": totals,
        "sbatch_submissions": submissions,
        "outputs": {"identical": len(diff.identical), "equivalent": diff.equivalent, "differing": diff.differing,
                    "only_local": diff.only_in_a, "only_slurm": diff.only_in_b, "skipped": len(diff.skipped)},
    }
    lines = [
        "# Recipe stages under the SLURM backend vs the local backend (tiny recipe)",
        "",
        f"`python benchmarks/slurm_stages.py`: stages {STAGES[0]}-{STAGES[1]} of `conf/recipe/tiny.yaml` "
        f"(`{' '.join(OPTS)}`) run twice from the same stages-1-3 workdir, one after the other, with "
        "`--cmd_backend local` and with `--cmd_backend slurm` against a single-node SLURM on the same machine "
        f"(`local/slurm_local.sh`). {args.note + ' ' if args.note else ''}"
        f"Machine: {result['machine']}; other work was running on it, so differences of a few seconds are noise. "
        f"Work directories: `{local}`, `{slurm}`.",
        "",
        "| stage | name | local (s) | slurm (s) | slurm - local (s) |",
        "|---:|---|---:|---:|---:|",
        *(f"| {r['stage']} | {r['name']} | {r['local_s']} | {r['slurm_s']} | {r['slurm_s'] - r['local_s']:+d} |"
          for r in rows),
        f"| | **stages {STAGES[0]}-{STAGES[1]}** | {totals['local']} | {totals['slurm']} | "
        f"{totals['slurm'] - totals['local']:+d} |",
        "",
        f"SLURM run: {submissions} `sbatch` array submissions "
        f"({(totals['slurm'] - totals['local']) / max(submissions, 1):+.1f} s per submission on average, "
        "scheduling, task start-up and the runner's polling together).",
        "",
        "## Outputs",
        "",
        "Every file of both workdirs except the job logs, task specs and stage-time records under `log/` "
        f"({len(diff.skipped)} files), byte for byte after each workdir's path is replaced by a placeholder: "
        f"identical: {len(diff.identical)}; equal but for the reporter's wall-clock timings (ESPnet's "
        f"`checkpoint.pth`, model/optimizer/scheduler/metrics compared exactly): {len(diff.equivalent)}; "
        f"differing: {len(diff.differing)}; only in the local run: {len(diff.only_in_a)}; only in the SLURM run: "
        f"{len(diff.only_in_b)}.",
    ]
    for title, items in (("Differing", diff.differing), ("Only local", diff.only_in_a), ("Only slurm", diff.only_in_b)):
        if items:
            lines += ["", f"{title}:", "", *(f"- `{f}`{WHY.get(Path(f).name, '')}" for f in items)]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    print(text)
    if root is not None and not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
