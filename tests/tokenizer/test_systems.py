"""Units configs (conf/units/*.yaml): what load_units_config accepts and how it names a bad entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet2_ext.tokenizer.systems import load_units_config, select_systems
from espnet2_ext.utils.fileio import DataError


@pytest.mark.parametrize("name", ["base.seed1", "two step", "a/b"])
def test_a_system_name_that_cannot_be_a_path_or_list_item_is_rejected(tmp_path: Path, name: str) -> None:
    config = tmp_path / "units.yaml"
    config.write_text(f"k: 10\nsystems:\n  ok_name-1: {{features: mfcc}}\n  '{name}': {{features: mfcc}}\n")
    with pytest.raises(DataError, match=rf"units.yaml: system '{name}': a system name may hold only"):
        load_units_config(config)
    config.write_text("k: 10\nsystems:\n  ok_name-1: {features: mfcc}\n")
    assert list(load_units_config(config)) == ["ok_name-1"]


def test_every_shipped_units_config_loads() -> None:
    for config in sorted(Path(__file__).resolve().parents[2].glob("conf/units/*.yaml")):
        assert load_units_config(config), config


def test_systems_are_split_into_the_chains_by_what_they_read_of_step_0(tmp_path: Path) -> None:
    # run.sh --parallel_chains: chain ssl must never get a system that reads the step-0 model or its weights
    config = tmp_path / "units.yaml"
    config.write_text("systems:\n"
                      "  base: {upstream: ssl, features: single}\n"
                      "  two: {upstream: step0, features: learned, weights: step1_step0}\n"
                      "  nostep0: {upstream: ssl, features: learned, weights: step1_ssl}\n"
                      "  crossed: {upstream: ssl, features: learned, weights: step1_step0}\n"
                      "  uni: {upstream: step0, features: uniform}\n"
                      "  mfcc: {features: mfcc}\n")
    systems = load_units_config(config)
    assert [s.name for s in select_systems(systems, "", "ssl")] == ["base", "nostep0", "mfcc"]
    assert [s.name for s in select_systems(systems, "", "step0")] == ["two", "crossed", "uni"]
    assert [s.name for s in select_systems(systems, "mfcc two", "ssl")] == ["mfcc"]
    assert len(select_systems(systems, "")) == 6
