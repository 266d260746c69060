"""The demo recipe's sharded stages under the SLURM backend, compared with a finished local demo run.

Takes a work directory where ``./run.sh`` (the demo, ``--cmd_backend local``) ran to the end, and
reruns its sharded stages with ``--cmd_backend slurm`` against a real single-node SLURM
(``local/slurm_local.sh``, started here and stopped by PID at the end unless ``SLURM_CONF`` already
points to a running one):

* stages 1-2 (corpus synthesis, data preparation: ``nj`` jobs each) in a fresh work directory;
* stages 6-8 and 10 (step-1 decoding, k-means feature dumps, unit dumps, step-2 decoding: ``nj``
  jobs each, per system) in a copy of the local work directory whose outputs of those stages
  are removed; the trained models (stages 4, 5, 9) are the local run's.

Every output is then compared with the local run's by
:func:`espnet2_ext.utils.workdir_diff.compare_workdirs` (job logs skipped), and the stage times with
the local run's ``log/stage_times.tsv``. Writes ``benchmarks/results/slurm_demo.{md,json}``.

Usage::

    python benchmarks/slurm_demo.py --local egs2/demo/asr2 --root /work/slurmdemo

``--root`` receives the two SLURM work directories; give it a path as long as the local work
directory's parent (``compare_workdirs`` replaces each workdir's own path, and sentencepiece models
record their training file's path with its length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from slurm_stages import WHY, stage_times  # noqa: E402

from espnet2_ext.utils.fileio import atomic_write_text  # noqa: E402
from espnet2_ext.utils.workdir_diff import compare_workdirs  # noqa: E402

# outputs of the rerun stages, relative to the workdir (globs), removed from the copy
RERUN_OUTPUTS = ("exp/step1_*/decode", "exp/step1_*/score", "exp/step1_*/.weights.done", "exp/step1_*/layer_weights.*",
                 "exp/kmeans", "dump/units", "exp/step2_*/decode", "exp/step2_*/submission")


def run_recipe(args: list[str], env: dict[str, str], log: Path) -> None:
    """``run.sh ARGS`` (the demo config) with its output in ``log``; exits when it fails."""
    with log.open("w") as f:
        r = subprocess.run([str(REPO_ROOT / "run.sh"), *args], cwd=REPO_ROOT, env=env, stdout=f,
                           stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"run.sh {' '.join(args)} failed (exit {r.returncode}); see {log}")


def copy_for_rerun(local: Path, wd: Path) -> None:
    """``local`` moved to ``wd`` as if it had run there, without the rerun stages' outputs.

    Every file's mention of ``local``'s path becomes ``wd``'s (byte for byte: the paths have the
    same length, so binary files such as sentencepiece models stay valid); the corpus is a symlink
    to the local one.
    """
    shutil.copytree(local, wd, symlinks=True, ignore=shutil.ignore_patterns("corpus", "log", "RESULTS.md", "*.png"))
    (wd / "corpus").symlink_to(local / "corpus")
    for pattern in RERUN_OUTPUTS:
        for p in wd.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    old, new = str(local).encode(), str(wd).encode()
    for dirpath, _dirs, names in os.walk(wd):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink():  # ESPnet's checkpoint links (some dangling) and the corpus link
                continue
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", type=Path, required=True, help="a demo work directory that ran to the end locally")
    p.add_argument("--root", type=Path, required=True, help="new directory for the SLURM work directories")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/slurm_demo")
    args = p.parse_args()
    local = args.local.resolve()
    root = args.root.resolve()
    if root.exists():
        sys.exit(f"{root} exists; give a new directory")
    root.mkdir(parents=True)
    fresh, rerun = root / "s12", root / "egs2/demo/asr2"
    if len(str(rerun)) != len(str(local)):
        sys.exit(f"{rerun} must have as many characters as {local} (copy_for_rerun rewrites paths byte for byte)")

    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    own_slurm = "SLURM_CONF" not in env
    state = root / "slurm_cluster"
    if own_slurm:
        subprocess.run([str(REPO_ROOT / "local/slurm_local.sh"), "start", str(state)], check=True)
        env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        slurm = ["--cmd_backend", "slurm"]
        print(f"stages 1-2 under slurm in {fresh}", file=sys.stderr)
        run_recipe(["--workdir", str(fresh), "--stop_stage", "2", *slurm], env, root / "s12.log")
        copy_for_rerun(local, rerun)
        for first, last in ((6, 8), (10, 10)):
            print(f"stages {first}-{last} under slurm in {rerun}", file=sys.stderr)
            run_recipe(["--workdir", str(rerun), "--stage", str(first), "--stop_stage", str(last), *slurm], env,
                       root / f"s{first}_{last}.log")
    finally:
        if own_slurm:
            subprocess.run([str(REPO_ROOT / "local/slurm_local.sh"), "stop", str(state)], check=False)

    local_times = stage_times(local)
    slurm_times = {**stage_times(fresh), **stage_times(rerun)}
    rows = [{"stage": int(n), "name": name, "local_s": local_times[n][1], "slurm_s": s}
            for n, (name, s) in sorted(slurm_times.items(), key=lambda kv: int(kv[0]))]
    diffs = {
        "stages 1-2 (corpus, data)": compare_workdirs(local, fresh, skip=("data/token_list/*",),
                                                      only=("corpus/*", "data/*")),
        "stages 6-8, 10": compare_workdirs(local, rerun, only=tuple(p if "." in p.split("/")[-1] else p + "/*"
                                                                    for p in RERUN_OUTPUTS)),
    }
    submissions = len(list(fresh.glob("log/**/q/*.json"))) + len(list(rerun.glob("log/**/q/*.json")))
    load = os.getloadavg()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at the end",
        "local_workdir": str(local), "slurm_workdirs": [str(fresh), str(rerun)],
        "stages": rows, "sbatch_submissions": submissions,
        "outputs": {k: {"identical": len(d.identical), "equivalent": d.equivalent, "differing": d.differing,
                        "only_local": d.only_in_a, "only_slurm": d.only_in_b} for k, d in diffs.items()},
    }
    lines = [
        "# The demo's sharded stages under the SLURM backend vs the local demo run",
        "",
        f"`python benchmarks/slurm_demo.py --local {local} --root {root}`: the demo's sharded stages rerun with "
        "`--cmd_backend slurm` against a single-node SLURM on the same machine (`local/slurm_local.sh`): stages 1-2 "
        "in a fresh work directory, stages 6-8 and 10 in a copy of the local run's work directory without those "
        f"stages' outputs (the trained models are the local run's). Machine: {result['machine']}.",
        "",
        "| stage | name | local (s) | slurm (s) |",
        "|---:|---|---:|---:|",
        *(f"| {r['stage']} | {r['name']} | {r['local_s']} | {r['slurm_s']} |" for r in rows),
        "",
        f"{submissions} `sbatch` array submissions.",
        "",
        "## Outputs",
        "",
        "Byte for byte after each work directory's path is replaced by a placeholder (job logs, stage times, "
        "RESULTS.md and charts are not compared):",
    ]
    for title, d in diffs.items():
        lines += ["", f"- {title}: identical {len(d.identical)}, equal but for ESPnet's recorded timings "
                      f"{len(d.equivalent)}, differing {len(d.differing)}, only local {len(d.only_in_a)}, "
                      f"only slurm {len(d.only_in_b)}"]
        lines += [f"  - differing: `{f}`{WHY.get(Path(f).name, '')}" for f in d.differing]
        lines += [f"  - only slurm: `{f}`" for f in d.only_in_b[:20]]
        lines += [f"  - only local: `{f}`" for f in d.only_in_a[:20]]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out.with_suffix(".md"), text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
