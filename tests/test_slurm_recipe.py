"""The recipe under --cmd_backend slurm against a real single-node SLURM (``slurm_env``, tests/conftest.py).

1. Stage 2 of the shared tiny workdir (built with the local backend) is redone in a fresh workdir under
   SLURM, from the same corpus, with another number of shards and ``--typecheck true`` (jobs without
   python -O, which their logs must not claim); its data dirs must equal the local ones.
2. Stages 4-11 (step-0 training and its check decode, step 1 and its decode, k-means features, unit
   dumps, step 2 and its decode, scoring) run under SLURM from the stages-1-3 outputs that the local
   run ``tiny_recipe_stages_4_13`` (tests/conftest.py, shared with the end-to-end tests) started from,
   with the same options; every output file of the two work directories must be identical (after each
   workdir's own path is replaced by a placeholder), job logs and stages 12-13 aside; ESPnet's resume
   checkpoints equal but for their wall-clock timings; the unit models' records equal but for
   the k-means fit time; the layer-weight chart equal but for its title, which names a workdir path.
3. GPU jobs: the test cluster has no GPUs, so sbatch refuses a job asking for one and its refusal
   prints the whole sbatch command; the task spec (``log/.../q/<name>.json``) holds the job's command.
   Starting from the SLURM workdir of 2 with one stage's done marker removed, each stage must ask for
   what fits: training ``--ngpu 1`` one GPU, ``--ngpu 2`` two GPUs through ESPnet's launcher (DDP),
   inference jobs one GPU each with ``--gpu_inference true``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from espnet2_ext.utils.workdir_diff import DEFAULT_SKIP, compare_workdirs
from tests.recipe import STAGES_4_13_OPTS, SharedRun, run_recipe

SET_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2num_samples")
# written by stages 12-13 (RESULTS.md and its chart, the pack), which only the local run went on to
LATER_STAGES = ("RESULTS.md", "per_language_cer.png", "exp/pack/*")


def test_stage2_under_slurm_gives_the_local_outputs(tiny_recipe_workdir: Path, slurm_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    corpus = tiny_recipe_workdir / "corpus"
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "2", "--stop_stage", "2", "--cmd_backend", "slurm",
                    "--nj", "3", "--typecheck", "true", "--mlsuperb_root", str(corpus / "mlsuperb"),
                    "--librispeech_root", str(corpus / "LibriSpeech")], slurm_env)
    assert r.returncode == 0, r.stderr[-3000:]
    local_sets = sorted(p.parent.name for p in (tiny_recipe_workdir / "data").glob("*/.done"))
    assert len(local_sets) == 7
    # one SLURM array of 3 measuring tasks per set, each task's log at its Kaldi path
    assert r.stderr.count("submitted SLURM array job") == len(local_sets)
    assert r.stderr.count("--array=1-3") == len(local_sets)
    for name in local_sets:
        for f in SET_FILES:
            assert (tmp_path / "data" / name / f).read_text() == (tiny_recipe_workdir / "data" / name / f).read_text(), \
                f"data/{name}/{f}"
        assert (tmp_path / "data" / name / ".done").is_file()
        for j in (1, 2, 3):
            log = (tmp_path / f"log/data/measure_{name}.{j}.log").read_text()
            assert "# Ended (code 0)" in log
            assert "PYTHONOPTIMIZE" not in log  # --typecheck true: typeguard's checks and asserts stay on


@dataclass(frozen=True)
class Stages4To11:
    """Stages 4-11 run from the same stages-1-3 outputs with both backends."""

    local: SharedRun  # the shared local run (its lock keeps the end-to-end tests off it while comparing)
    slurm: Path  # the SLURM run's workdir
    slurm_stderr: str  # the SLURM run's run.sh stderr


@pytest.fixture(scope="module")
def stages_4_11(tiny_recipe_workdir: Path, slurm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Stages4To11:
    """The SLURM run of stages 4-11 and the local one it is compared with.

    The local run is the shared ``tiny_recipe_stages_4_13`` (tests/conftest.py; the end-to-end tests'
    run, which went on to stages 12-13). It is asked for after the SLURM run, so that another worker
    can run it meanwhile. No test of this module may take it as an argument: pytest sets up
    session-scoped fixtures before module-scoped ones, so this worker would wait for the whole local
    run before starting its own (it did: 6 of the SLURM test's 13 minutes of setup).
    """
    wd = tmp_path_factory.mktemp("stages_4_11_slurm")
    shutil.copytree(tiny_recipe_workdir / "data", wd / "data", ignore=shutil.ignore_patterns("token_list"))
    shutil.copytree(tiny_recipe_workdir / "exp/ssl", wd / "exp/ssl")
    r = run_recipe(["--workdir", str(wd), "--stage", "4", "--stop_stage", "11", "--cmd_backend", "slurm",
                    *STAGES_4_13_OPTS], slurm_env)
    assert r.returncode == 0, f"slurm: {r.stderr[-4000:]}"
    return Stages4To11(request.getfixturevalue("tiny_recipe_stages_4_13"), wd, r.stderr)


# outputs of every sharded stage (4: check decode, 6: step-1 decode, 7: features -> k-means, 8: units,
# 10: step-2 decode) and of the training stages between them (4, 5, 9) and scoring (11)
KEY_OUTPUTS = [
    "exp/step0/check/decode_final/dev/text", "exp/step0/dev_cer.json", "exp/step0/valid.loss.ave.pth",
    "exp/step0/upstream.json", "exp/step1_step0/valid.loss.ave.pth", "exp/step1_step0/layer_weights.json",
    "exp/step1_step0/decode/test_1h/text", "exp/step1_step0/score/scores.json",
    *(f"exp/kmeans/{s}/centroids.npy" for s in ("baseline", "twostep")),
    *(f"dump/units/twostep/{s}/{f}" for s in ("train", "test_1h") for f in ("units", "text", "tokens")),
    "dump/units/twostep/src_bpe/bpe.model", "exp/step2_twostep/valid.acc.ave.pth",
    *(f"exp/step2_{s}/decode/{t}/text" for s in ("baseline", "twostep") for t in ("test_1h", "dev_clean")),
    "exp/step2_twostep/submission/vocab.json", "exp/step2_twostep/submission/test_1h/units.json",
    "exp/step2_twostep/score/scores.json",
]


def _same_unit_model(a: Path, b: Path) -> None:
    """unit_model.json records the k-means fit's wall time (fit_seconds); all else must agree."""
    def load(p: Path) -> dict:
        record = json.loads(p.read_text().replace(str(p.resolve().parents[3]), "<WORKDIR>"))
        record["kmeans"].pop("fit_seconds")
        return record
    assert load(a) == load(b)


def _same_chart_but_title(a: Path, b: Path) -> None:
    """layer_weights.png's title names the upstream's path inside the workdir; the bars must agree."""
    x, y = (np.asarray(Image.open(p)) for p in (a, b))
    assert x.shape == y.shape
    rows = np.flatnonzero((x != y).any(axis=(1, 2)))
    assert rows.max() < 0.15 * x.shape[0], f"pixel rows {rows.min()}-{rows.max()} of {x.shape[0]} differ"


# outputs that legitimately differ between two runs, with the check of what must still agree
EXPLAINED = {
    "exp/kmeans/baseline/unit_model.json": _same_unit_model,
    "exp/kmeans/twostep/unit_model.json": _same_unit_model,
    "exp/step1_step0/layer_weights.png": _same_chart_but_title,
}


def test_stages_4_to_11_under_slurm_give_the_local_outputs(stages_4_11: Stages4To11) -> None:
    local, local_log = stages_4_11.local.workdir, stages_4_11.local.stderr
    slurm, slurm_log = stages_4_11.slurm, stages_4_11.slurm_stderr
    assert "submitted SLURM array job" not in local_log
    # every ${cmd} call was an sbatch array: the sharded ones with one task per shard (nj 2)
    assert slurm_log.count("submitted SLURM array job") >= 20 and "--array=1-2" in slurm_log
    assert "# Ended (code 0)" in (slurm / "log/step2/twostep/decode.2.log").read_text()
    with stages_4_11.local.lock:  # the end-to-end tests neither hide nor rerun it meanwhile
        diff = compare_workdirs(local, slurm, skip=(*DEFAULT_SKIP, *LATER_STAGES))
        assert not diff.only_in_a and not diff.only_in_b, (diff.only_in_a, diff.only_in_b)
        assert set(diff.differing) <= set(EXPLAINED), diff.differing
        for rel in diff.differing:
            EXPLAINED[rel](local / rel, slurm / rel)
    assert "RESULTS.md" in diff.skipped and "exp/pack/twostep.tar.gz" in diff.skipped
    # ESPnet's resume checkpoints: equal model, optimizer, scheduler and metrics; only the timings differ
    assert sorted(diff.equivalent) == [f"exp/{e}/checkpoint.pth" for e in
                                       ("step0", "step1_step0", "step2_baseline", "step2_twostep")]
    missing = [f for f in KEY_OUTPUTS if f not in diff.identical]
    assert not missing, f"not compared: {missing}"
    assert len(diff.identical) > 200
    # the CPU run asked SLURM for no GPU anywhere; every training job for its own --train_threads cores
    specs = {p.relative_to(slurm / "log").as_posix(): json.loads(p.read_text()) for p in slurm.glob("log/**/q/*.json")}
    assert all(s["resources"]["gpu"] == 0 for s in specs.values())
    train = {k: s for k, s in specs.items() if k.split("/")[-1].startswith("train")}
    assert sorted(train) == ["step0/q/train.json", "step0/q/train_epoch1.json", "step1_step0/q/train.json",
                             "step2/baseline/q/train.json", "step2/twostep/q/train.json"]
    for s in train.values():
        assert s["resources"]["num_threads"] == 1  # --train_threads 1 in STAGES_4_13_OPTS, not split
        assert s["jobs"]["1"]["command"][-4:] == ["--ngpu", "0", "--use_amp", "false"]


def _gres(stderr: str) -> tuple[list[str], str]:
    """The sbatch command the runner printed when the cluster refused it, and sbatch's message."""
    lines = stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("run_jobs: sbatch failed"))
    assert lines[i + 1].startswith("command: sbatch "), lines[i + 1]
    return lines[i + 1].split()[1:], lines[i]


# stage, done markers to remove (relative to the workdir), options, the task spec written, GPUs asked,
# the tail of the job's command, whether ESPnet's launcher submitted it
GPU_CASES = {
    "step0 training, 2 GPUs": (4, ["exp/step0/.done", "exp/step0/.train.done", "exp/step0/check/score_1epoch"],
                               ["--ngpu", "2"], "step0/q/train_epoch1.json", 2,
                               ["--max_epoch", "1", "--ngpu", "2", "--multiprocessing_distributed", "True"], True),
    "step0 check decode, gpu_inference": (4, ["exp/step0/.done", "exp/step0/check/score_final"],
                                          ["--gpu_inference", "true"], "step0/q/decode_final.json", 1,
                                          None, False),
    "step1 training, 1 GPU": (5, ["exp/step1_step0/.done"], ["--ngpu", "1"], "step1_step0/q/train.json", 1,
                              ["--output_dir", "{wd}/exp/step1_step0", "--ngpu", "1"], False),
    "step1 decode, gpu_inference": (6, ["exp/step1_step0/.weights.done", "exp/step1_step0/decode"],
                                    ["--gpu_inference", "true", "--ngpu", "2"], "step1_step0/q/decode.json", 1,
                                    None, False),
    "feature dump, gpu_inference": (7, ["exp/kmeans/twostep/.done"], ["--gpu_inference", "true"],
                                    "kmeans/twostep/q/feats.json", 1,
                                    ["--device", "cuda", "--shard", "1", "--nshard", "2"], False),
    "unit dump, gpu_inference": (8, ["dump/units/twostep/.done"], ["--gpu_inference", "true"],
                                 "units/twostep/q/dump.json", 1, ["--device", "cuda", "--shard", "1", "--nshard", "2"],
                                 False),
    "step2 training, 2 GPUs": (9, ["exp/step2_twostep/.done"], ["--ngpu", "2"], "step2/twostep/q/train.json", 2,
                               ["--ngpu", "2", "--multiprocessing_distributed", "True"], True),
    "step2 decode, gpu_inference": (10, ["exp/step2_twostep/decode/.done"], ["--gpu_inference", "true"],
                                    "step2/twostep/q/decode.json", 1, None, False),
}


@pytest.mark.parametrize("case", list(GPU_CASES))
def test_gpu_jobs_ask_sbatch_for_what_fits(case: str, stages_4_11: Stages4To11,
                                           slurm_env: dict[str, str], tmp_path: Path) -> None:
    stage, remove, opts, spec_name, gpus, tail, launched = GPU_CASES[case]
    wd = tmp_path / "wd"
    shutil.copytree(stages_4_11.slurm, wd, symlinks=True)
    for rel in remove:
        p = wd / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    r = run_recipe(["--workdir", str(wd), "--stage", str(stage), "--stop_stage", str(stage), "--cmd_backend", "slurm",
                "--unit_systems", "twostep", "--step1_upstreams", "step0", *opts], slurm_env)
    assert r.returncode != 0, "the test cluster has no GPU: sbatch must refuse"
    sbatch, message = _gres(r.stderr)
    assert "gres" in message.lower(), message  # refused for the GPU request, nothing else
    assert sbatch[sbatch.index("-p") + 1] == "gpu" and f"--gres=gpu:{gpus}" in sbatch
    spec = json.loads((wd / "log" / spec_name).read_text())
    assert spec["resources"]["gpu"] == gpus
    assert sbatch[-1] == str(wd / "log" / spec_name.replace(".json", ".sh"))
    command = spec["jobs"]["1"]["command"]
    if tail is None:  # decoding: ESPnet's --ngpu 1 for a GPU decoder
        assert command[command.index("--ngpu") + 1] == "1"
    else:
        assert command[-len(tail):] == [t.replace("{wd}", str(wd)) for t in tail]
    assert "--use_amp" not in command  # mixed precision stays as the config has it on GPUs
    assert ("(launch:" in r.stderr) == launched  # espnet2.bin.launch's log lines
    if launched:
        assert f"single-node with {gpus}gpu on distributed mode" in r.stderr
        assert sbatch[sbatch.index("--cpus-per-task") + 1] == str(gpus)  # one core per DDP process
