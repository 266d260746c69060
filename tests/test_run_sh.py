"""The recipe driver's contract: stages listed, options validated, config < command line, honest stops."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from espnet2_ext.bin.recipe_config import ConfigError, load_recipe_config
from tests.recipe import run_recipe


def test_help_lists_every_stage(repo_root: Path, cli_env: dict[str, str]) -> None:
    r = run_recipe(["--help"], cli_env, config=None)
    assert r.returncode == 0
    stage_lines = [ln for ln in r.stdout.splitlines() if ln[:4].strip().isdigit()]
    assert [int(ln.split()[0]) for ln in stage_lines] == list(range(1, 14))
    assert [ln.split()[1] for ln in stage_lines] == ["corpus", "data", "ssl", "finetune", "step1", "weights", "kmeans",
                                                     "units", "step2", "decode", "score", "results", "pack"]
    assert "--mlsuperb_root" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option --bogus"),
        (["--stage"], "needs a value"),
        (["--stage", "99"], "unknown stage 99"),
        (["--nj", "0"], "--nj must be a positive integer"),
        (["--lid", "yes"], "--lid must be true or false"),
        (["--typecheck", "yes"], "--typecheck must be true or false"),
        (["stage", "2"], "unexpected argument 'stage'"),
    ],
)
def test_wrong_options_are_rejected(repo_root: Path, cli_env: dict[str, str], args: list[str], message: str) -> None:
    r = run_recipe(args, cli_env, config=None)
    assert r.returncode == 2
    assert message in r.stderr


def test_config_typo_is_named_with_a_suggestion(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("workdir: somewhere\nmlsuperb_rot: /x\n")
    r = run_recipe(["--config", str(cfg)], cli_env, config=None)
    assert r.returncode == 2
    assert f"{cfg}: unknown option 'mlsuperb_rot'; did you mean 'mlsuperb_root'?" in r.stderr


def test_command_line_overrides_config_and_paths_are_relative_to_cwd(
    repo_root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"workdir: {tmp_path / 'from_config'}\n")
    # stage 11 with no hypotheses stops with an error that names the effective workdir
    r = run_recipe(["--config", "c.yaml", "--stage", "11", "--stop_stage", "11"], cli_env, config=None, cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path}/from_config/exp" in r.stderr
    r = run_recipe(["--config", "c.yaml", "--workdir", "from_cli", "--stage", "11", "--stop_stage", "11"],
               cli_env, config=None, cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path}/from_cli/exp" in r.stderr, r.stderr
    assert "run the decode stage first" in r.stderr


def test_recipe_config_values_become_shell_strings(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text("nj: 4\nlid: true\nreserved_langs: [pol, bul]\ncorpus_config: null\nworkdir: \"a b; $(rm -rf x)\"\n")
    values = load_recipe_config(cfg, {"nj", "lid", "reserved_langs", "corpus_config", "workdir"})
    assert values == {"nj": "4", "lid": "true", "reserved_langs": "pol bul", "corpus_config": "",
                      "workdir": "a b; $(rm -rf x)"}


@pytest.mark.parametrize(
    "content, message",
    [("nj: [1\n", "invalid YAML"), ("- a\n- b\n", "expected a mapping"), ("nj: {a: 1}\n", "option 'nj': nested")],
)
def test_recipe_config_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe_config(cfg, {"nj"})
    assert str(cfg) in str(e.value)


def test_shipped_recipe_configs_are_valid(repo_root: Path) -> None:
    text = (repo_root / "run.sh").read_text()
    known = set(text.split("option_names=(", 1)[1].split(")", 1)[0].split())
    for cfg in sorted((repo_root / "conf/recipe").glob("*.yaml")):
        values = load_recipe_config(cfg, known)
        assert values["workdir"].startswith("egs2/"), cfg


@pytest.mark.parametrize(
    "system, config",
    [([], "conf/recipe/ml_superb.yaml"), (["--system", "challenge_baseline"], "conf/recipe/ml_superb_wavlm_baseline.yaml")],
)
def test_real_recipe_selects_its_system_with_one_option(
    repo_root: Path, cli_env: dict[str, str], tmp_path: Path, system: list[str], config: str
) -> None:
    recipe = repo_root / "egs2/ml_superb/asr2/run.sh"
    r = subprocess.run([str(recipe), *system, "--workdir", str(tmp_path), "--stage", "11", "--stop_stage", "11"],
                       env=cli_env, capture_output=True, text=True, timeout=120)
    # the recipe config loaded (its options are valid), then stage 11 stops: nothing decoded yet
    assert r.returncode == 2 and "run the decode stage first" in r.stderr, r.stderr
    assert f"config={repo_root.resolve() / config} " in r.stderr


def test_real_recipe_rejects_an_unknown_system(repo_root: Path, cli_env: dict[str, str]) -> None:
    r = subprocess.run([str(repo_root / "egs2/ml_superb/asr2/run.sh"), "--system", "wavlm"], env=cli_env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown --system 'wavlm': twostep_xls_r or challenge_baseline" in r.stderr


@pytest.mark.parametrize("units_config", ["conf/units/ml_superb.yaml", "conf/units/challenge_baseline.yaml"])
def test_real_units_configs_take_the_challenge_baselines_layer_21(repo_root: Path, units_config: str) -> None:
    """WavLM-large and XLS-R 300M have 25 hidden states: the baseline system clusters hidden state 21."""
    from espnet2_ext.tokenizer.features import FeatureSpec
    from espnet2_ext.tokenizer.systems import load_units_config

    system = load_units_config(repo_root / units_config)["baseline"]
    upstream = {"upstream": {"name": "wavlm_large", "path": None, "cache_dir": None}, "num_hidden_states": 25}
    spec = FeatureSpec.parse(system.features, upstream, None, system.normalize_layers)
    assert spec.mode == "single" and list(spec.layers) == [21]


def test_empty_step1_upstreams_turn_step_1_off(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    """The challenge baseline has no step 1: stages 5-6 do nothing and say so."""
    r = run_recipe(["--config", "conf/recipe/tiny.yaml", "--workdir", str(tmp_path), "--stage", "5",
                           "--stop_stage", "6", "--step1_upstreams", ""], cli_env, config=None)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("step 1 is off (--step1_upstreams is empty)") == 2
    # the same as two chains: stages 5 and 6 of each, every line prefixed with its chain
    r = run_recipe(["--config", "conf/recipe/tiny.yaml", "--workdir", str(tmp_path), "--stage", "5",
                    "--stop_stage", "6", "--step1_upstreams", "", "--parallel_chains", "true"], cli_env, config=None)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("[ssl] ") >= 2 and r.stderr.count("[step0] ") >= 2
    assert r.stderr.count("step 1 is off (--step1_upstreams is empty)") == 4
    assert not (tmp_path / "exp").exists()
