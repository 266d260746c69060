"""The Kaldi-style job runner: logs per job, failures named, parallelism limit, no shell for argv."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from espnet2_ext.utils import jobs
from espnet2_ext.utils.jobs import JobSpecError, LocalBackend, Resources, parse_invocation, run_array


def run_jobs(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espnet2_ext.bin.run_jobs", *args], env=env,
                          capture_output=True, text=True, **kw)


def test_array_runs_every_job_with_its_own_log(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = "import sys; open(sys.argv[1], 'w').write(sys.argv[2]); print('hello from', sys.argv[2])"
    r = run_jobs(["JOB=1:4", str(tmp_path / "log/x.JOB.log"), sys.executable, "-c", script,
                  str(out / "res.JOB"), "JOB"], cli_env)
    assert r.returncode == 0, r.stderr
    for i in range(1, 5):
        assert (out / f"res.{i}").read_text() == str(i)
        log = (tmp_path / f"log/x.{i}.log").read_text()
        assert log.startswith("# ") and f"res.{i}" in log.splitlines()[0]
        assert f"hello from {i}" in log
        assert "# Ended (code 0)" in log


def test_failures_name_every_failed_job_and_its_log(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = "import sys; j = int(sys.argv[1]); print('shard', j, 'broke' if j % 2 == 0 else 'ok'); sys.exit(3 if j % 2 == 0 else 0)"
    r = run_jobs(["JOB=1:4", str(tmp_path / "log/y.JOB.log"), sys.executable, "-c", script, "JOB"], cli_env)
    assert r.returncode == 1
    assert "2 of 4 jobs failed" in r.stderr
    assert f"JOB=2 (exit 3, log {tmp_path}/log/y.2.log)" in r.stderr
    assert f"JOB=4 (exit 3, log {tmp_path}/log/y.4.log)" in r.stderr
    assert "JOB=1 " not in r.stderr and "JOB=3 " not in r.stderr
    assert "shard 2 broke" in r.stderr  # the end of the first failed log is shown
    assert "# Ended (code 3)" in (tmp_path / "log/y.4.log").read_text()


def test_argv_commands_never_go_through_a_shell(tmp_path: Path, cli_env: dict[str, str]) -> None:
    weird = tmp_path / "dir with space" / "a;$(touch pwned)`x`.txt"
    weird.parent.mkdir()
    script = "import sys; open(sys.argv[1], 'w').write('ok')"
    r = run_jobs([str(tmp_path / "log/z.log"), sys.executable, "-c", script, str(weird)], cli_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert weird.read_text() == "ok"
    assert not (tmp_path / "pwned").exists()


def test_single_string_command_runs_in_bash(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_jobs(["JOB=1:2", str(tmp_path / "p.JOB.log"), f"echo job JOB | tr a-z A-Z > {tmp_path}/p.JOB.txt"], cli_env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.2.txt").read_text() == "JOB 2\n"


def test_threads_are_given_to_each_job(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_jobs(["--num_threads", "3", str(tmp_path / "t.log"), "bash", "-c", "echo threads=$OMP_NUM_THREADS"], cli_env)
    assert r.returncode == 0, r.stderr
    assert "threads=3" in (tmp_path / "t.log").read_text()


def _intervals(d: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, p.read_text().split())) for p in sorted(d.glob("*.t"))]


@pytest.mark.parametrize("limit", [1, 2])
def test_parallelism_limit(tmp_path: Path, limit: int) -> None:
    script = "import sys, time; s = time.time(); time.sleep(0.3); open(sys.argv[1], 'w').write(f'{s} {time.time()}')"
    array = parse_invocation("JOB=1:4", str(tmp_path / "l.JOB.log"),
                             [sys.executable, "-c", script, str(tmp_path / "JOB.t")])
    run_array(array, LocalBackend(max_parallel=limit))
    spans = _intervals(tmp_path)
    assert len(spans) == 4
    # at no moment do more than `limit` jobs run
    for s, _ in spans:
        running = sum(1 for a, b in spans if a <= s < b)
        assert running <= limit
    if limit == 2:  # and the limit is actually used
        assert max(sum(1 for a, b in spans if a <= s < b) for s, _ in spans) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["JOB=3:1", "l.JOB.log", "true"], "end 1 < start 3"),
        (["JOB=1:2", "l.log", "true"], "does not contain JOB"),
        (["--bogus", "1", "l.log", "true"], "unknown option --bogus"),
        (["l.log"], "usage"),
        (["--backend", "pbs", "l.log", "true"], "unknown backend 'pbs'"),
    ],
)
def test_malformed_calls_exit_2_with_a_message(tmp_path: Path, cli_env: dict[str, str], args: list[str], message: str) -> None:
    r = run_jobs(args, cli_env, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_missing_program_is_a_failed_job(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_jobs([str(tmp_path / "m.log"), "no-such-program-xyz", "arg"], cli_env)
    assert r.returncode == 1
    assert "exit 127" in r.stderr
    assert "cannot start" in (tmp_path / "m.log").read_text()


def test_sigterm_stops_running_jobs(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-m", "espnet2_ext.bin.run_jobs", "JOB=1:2", str(tmp_path / "s.JOB.log"),
                             sys.executable, "-c", script, str(tmp_path / "pid.JOB")], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not all((tmp_path / f"pid.{i}").exists() for i in (1, 2)) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    pids = [int((tmp_path / f"pid.{i}").read_text()) for i in (1, 2)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "interrupted by signal" in err
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_parse_invocation_substitutes_in_log_and_command() -> None:
    a = parse_invocation("SPLIT=2:3", "log/k.SPLIT.log", ["prog", "--shard", "SPLIT", "in.SPLIT.scp"], Resources(gpu=1))
    assert [j.index for j in a.jobs] == [2, 3]
    assert a.jobs[1].command == ("prog", "--shard", "3", "in.3.scp")
    assert str(a.jobs[0].log) == "log/k.2.log"
    with pytest.raises(JobSpecError):
        parse_invocation("JOB=1:2", "log", [])


def test_a_job_killed_by_a_signal_is_named_with_the_signal(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = "import os, signal, sys; sys.argv[1] == '2' and os.kill(os.getpid(), signal.SIGKILL)"
    r = run_jobs(["JOB=1:2", str(tmp_path / "k.JOB.log"), sys.executable, "-c", script, "JOB"], cli_env)
    assert r.returncode == 1
    assert "1 of 2 jobs failed: JOB=2 (exit -9, killed by SIGKILL (out of memory?" in r.stderr
    assert f"log {tmp_path}/k.2.log" in r.stderr


def test_a_niced_runners_jobs_stay_niced_against_other_sessions(tmp_path: Path, cli_env: dict[str, str]) -> None:
    # run.sh's chain ssl runs at nice 10; each job is a session of its own, which Linux's autogroup
    # scheduling would otherwise weigh like any other session at nice 0
    r = subprocess.run(["nice", "-n", "7", sys.executable, "-m", "espnet2_ext.bin.run_jobs", "JOB=1:2",
                        str(tmp_path / "n.JOB.log"), "bash", "-c",
                        "echo nice=$(nice); cat /proc/self/autogroup 2>/dev/null || echo no-autogroup"],
                       env=cli_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for job in (1, 2):
        log = (tmp_path / f"n.{job}.log").read_text()
        assert "nice=7" in log
        if "no-autogroup" not in log:  # a kernel with autogroups: the job's group has the runner's nice
            assert re.search(r"/autogroup-\d+ nice 7\n", log), log


def test_keep_niceness_writes_the_runners_nice_to_the_autogroup(tmp_path: Path) -> None:
    autogroup = tmp_path / "autogroup"
    jobs.keep_niceness(1, autogroup)  # this test process runs at nice 0: nothing to carry over
    assert not autogroup.exists()
    script = ("import os, sys; from pathlib import Path; from espnet2_ext.utils.jobs import keep_niceness; "
              "os.nice(5); keep_niceness(1, Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", script, str(autogroup)], check=True, cwd=Path(__file__).parents[2])
    assert autogroup.read_text() == "5"
