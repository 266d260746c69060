"""The SLURM backend without a cluster: option mapping (conf/slurm.conf) and the sbatch command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet2_ext.utils.jobs import JobSpecError, Resources, parse_invocation
from espnet2_ext.utils.slurm import DEFAULT_CONFIG, SlurmBackend, SlurmConfig, array_spec


def test_the_shipped_config_maps_cpu_memory_time_and_gpus() -> None:
    cfg = SlurmConfig.load(DEFAULT_CONFIG)
    assert cfg.command == ["sbatch", "--export=ALL"]
    assert cfg.options(Resources()) == ["--cpus-per-task", "1", "--time", "24:00:00"]
    assert cfg.options(Resources(num_threads=4, mem="8G", time="2:00:00", gpu=2)) == [
        "--cpus-per-task", "4", "--mem-per-cpu", "8G", "--time", "2:00:00", "-p", "gpu", "--gres=gpu:2"]
    # an explicit partition comes last, so it wins over the GPU partition
    assert cfg.options(Resources(gpu=1, partition="a100"))[-5:] == ["-p", "gpu", "--gres=gpu:1", "-p", "a100"]


def test_exact_rules_win_and_missing_rules_are_errors(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch -A proj  # account\noption gpu=0 -p cpu\noption gpu=* -p gpu --gres=gpu:$0\n")
    cfg = SlurmConfig.load(conf)
    assert cfg.command == ["sbatch", "-A", "proj"]
    assert cfg.options(Resources(gpu=0)) == ["-p", "cpu"]
    assert cfg.options(Resources(gpu=3)) == ["-p", "gpu", "--gres=gpu:3"]
    with pytest.raises(JobSpecError, match=rf"{conf}: no rule for mem=4G; add 'option mem=\* \.\.\.'"):
        cfg.options(Resources(gpu=0, mem="4G"))


@pytest.mark.parametrize("text, message", [
    ("command sbatch\nbogus line\n", ":2: expected 'command ...'"),
    ("command sbatch\noption cores=* -c $0\n", ":2: unknown resource 'cores'"),
    ("option gpu=0\n", "no 'command sbatch ...' line"),
])
def test_a_bad_config_names_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(text)
    with pytest.raises(JobSpecError, match=message) as e:
        SlurmConfig.load(conf)
    assert str(conf) in str(e.value)


def test_array_spec_compresses_indices() -> None:
    assert array_spec([1, 2, 3, 4], None) == "1-4"
    assert array_spec([2, 4, 5, 6, 9], 2) == "2,4-6,9%2"
    assert array_spec([7], None) == "7"


def test_sbatch_command_puts_each_task_log_at_its_kaldi_path(tmp_path: Path) -> None:
    array = parse_invocation("JOB=1:3", str(tmp_path / "log/100%/measure.JOB.log"), ["prog", "--shard", "JOB"],
                             Resources(num_threads=2))
    argv = SlurmBackend(max_parallel=2).sbatch_argv(array, tmp_path / "log/q/measure.sh")
    assert argv[:4] == ["sbatch", "--export=ALL", "--cpus-per-task", "2"]
    assert f"--output={tmp_path}/log/100%%/measure.%a.log" in argv  # %a = the task's JOB; % escaped
    assert "--array=1-3%2" in argv and "--job-name=measure" in argv and "--parsable" in argv
    assert argv[-1] == str(tmp_path / "log/q/measure.sh")
