"""Units configs (conf/units/*.yaml): what load_units_config accepts and how it names a bad entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet2_ext.tokenizer.systems import load_units_config
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
