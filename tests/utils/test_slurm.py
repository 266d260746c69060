"""The SLURM backend against a real single-node SLURM (local/slurm_local.sh; see tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from espnet2_ext.utils.jobs import parse_invocation
from espnet2_ext.utils.slurm import SlurmBackend

# shard S writes its output, records the SLURM task that ran it, and fails while flags/broken.S exists
SHARD = """import os, sys
s, out = sys.argv[1], sys.argv[2]
print('shard', s, 'array', os.environ['SLURM_ARRAY_JOB_ID'], 'task', os.environ['SLURM_ARRAY_TASK_ID'])
if os.path.exists(os.path.join(out, '..', 'flags', 'broken.' + s)):
    sys.exit('shard ' + s + ': input is broken')
open(os.path.join(out, 'res.' + s), 'w').write(s)
"""


def run_jobs(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espnet2_ext.bin.run_jobs", "--backend", "slurm", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_sharded_array_failed_shard_is_reported_and_rerun_alone(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    out, flags = tmp_path / "out", tmp_path / "flags"
    out.mkdir()
    flags.mkdir()
    (flags / "broken.3").touch()
    args = ["--num_threads", "1", "SHARD=1:4", str(tmp_path / "log/part.SHARD.log"), sys.executable, "-c", SHARD,
            "SHARD", str(out)]
    r = run_jobs(args, slurm_env)
    assert r.returncode == 1
    assert f"1 of 4 jobs failed: JOB=3 (exit 1, log {tmp_path}/log/part.3.log)" in r.stderr
    assert "shard 3: input is broken" in r.stderr  # the end of the failed log
    assert "--array=1-4" in r.stderr
    logs = {j: (tmp_path / f"log/part.{j}.log").read_text() for j in range(1, 5)}
    first_array = logs[1].split("array ")[1].split()[0]
    for j in range(1, 5):  # every task logged at its Kaldi path, run by SLURM as task j of one array
        assert f"shard {j} array {first_array} task {j}" in logs[j]
    assert sorted(p.name for p in out.iterdir()) == ["res.1", "res.2", "res.4"]

    (flags / "broken.3").unlink()
    r = run_jobs(args, slurm_env)
    assert r.returncode == 0, r.stderr
    assert "JOB=1,2,4 succeeded in an earlier run" in r.stderr and "--array=3\n" in r.stderr
    second = (tmp_path / "log/part.3.log").read_text()
    assert "# Ended (code 0)" in second and f"array {first_array} " not in second
    for j in (1, 2, 4):
        assert (tmp_path / f"log/part.{j}.log").read_text() == logs[j], "not rerun"
    assert sorted(p.name for p in out.iterdir()) == ["res.1", "res.2", "res.3", "res.4"]
    assert not list((tmp_path / "log").glob("*.status")), "no markers left once the array succeeded"


def test_a_task_killed_by_slurm_is_a_failure_with_its_log(tmp_path: Path, slurm_env: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    # task 2 is cancelled by the scheduler while it runs: no exit status is ever written for it
    # (SHARD, not JOB, is the array variable: JOB would be replaced inside SLURM_ARRAY_JOB_ID too)
    kill = "[ SHARD = 2 ] && scancel ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}; sleep 5; echo done SHARD"
    array = parse_invocation("SHARD=1:2", str(tmp_path / "k.SHARD.log"), [kill])
    backend = SlurmBackend(lost_grace=1.0, squeue_every=0.5)
    res = backend.run(array)
    assert res[0].returncode == 0
    assert res[1].returncode != 0 and "killed by SLURM without an exit status" in res[1].note
    assert "CANCELLED" in (tmp_path / "k.2.log").read_text()  # SLURM's own message lands in the Kaldi log
