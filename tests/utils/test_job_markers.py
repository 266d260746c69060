"""Rerunning a failed array runs only the failed jobs, unless what their commands name has changed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from espnet2_ext.utils.jobs import JobsFailed, LocalBackend, parse_invocation, run_array, status_path

# job J appends J to work/runs.J (how often it ran) and fails while flags/broken.J exists (flags/ is
# not named on the command line: breaking and mending a job changes nothing the markers look at)
SCRIPT = """import os, sys
j, d = sys.argv[1], sys.argv[2]
open(os.path.join(d, 'runs.' + j), 'a').write(j)
sys.exit(4 if os.path.exists(os.path.join(d, '..', 'flags', 'broken.' + j)) else 0)
"""


def run(tmp_path: Path, resume: bool = True) -> list:
    array = parse_invocation("JOB=1:4", str(tmp_path / "log/x.JOB.log"),
                             [sys.executable, "-c", SCRIPT, "JOB", str(tmp_path / "work")])
    return run_array(array, LocalBackend(max_parallel=2), resume=resume)


def runs(tmp_path: Path) -> list[int]:
    return [len((tmp_path / f"work/runs.{j}").read_text()) if (tmp_path / f"work/runs.{j}").exists() else 0
            for j in range(1, 5)]


@pytest.fixture
def failed_once(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    (tmp_path / "flags").mkdir()
    (tmp_path / "flags/broken.3").touch()
    with pytest.raises(JobsFailed) as e:
        run(tmp_path)
    assert [r.index for r in e.value.failed] == [3]
    (tmp_path / "flags/broken.3").unlink()
    return tmp_path


def test_rerun_after_a_failure_runs_only_the_failed_job_and_cleans_up(failed_once: Path) -> None:
    assert runs(failed_once) == [1, 1, 1, 1]
    results = run(failed_once)
    assert runs(failed_once) == [1, 1, 2, 1]
    assert [(r.index, r.returncode, r.note) for r in results] == [(1, 0, "done before"), (2, 0, "done before"),
                                                                  (3, 0, ""), (4, 0, "done before")]
    # the array is complete: no markers are left to skip anything next time
    assert not list((failed_once / "log").glob("*.status"))
    run(failed_once)
    assert runs(failed_once) == [2, 2, 3, 2]


def test_a_changed_file_named_by_the_command_reruns_everything(failed_once: Path) -> None:
    # the work dir is named on the command line: a new entry in it means the inputs changed
    (failed_once / "work/new_input").write_text("x")
    run(failed_once)
    assert runs(failed_once) == [2, 2, 2, 2]


def test_removed_outputs_rerun_everything(failed_once: Path) -> None:
    (failed_once / "work/runs.1").unlink()  # an output the successful job 1 wrote, removed by the stage
    run(failed_once)
    assert runs(failed_once) == [1, 2, 2, 2]


def test_resume_false_reruns_everything(failed_once: Path) -> None:
    run(failed_once, resume=False)
    assert runs(failed_once) == [2, 2, 2, 2]


def test_a_job_failing_again_keeps_the_others_done(failed_once: Path) -> None:
    (failed_once / "flags/broken.3").touch()
    with pytest.raises(JobsFailed) as e:
        run(failed_once)
    assert [r.index for r in e.value.failed] == [3]
    assert status_path(failed_once / "log/x.3.log").read_text().startswith('{"returncode": 4')
    assert runs(failed_once) == [1, 1, 2, 1]
    (failed_once / "flags/broken.3").unlink()
    run(failed_once)
    assert runs(failed_once) == [1, 1, 3, 1]
