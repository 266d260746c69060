"""Turn a recipe config (YAML) into shell assignments for run.sh.

Usage::

    eval "$(python -m espnet2_ext.bin.recipe_config --config conf/recipe/demo.yaml --known stage,nj,...)"

Each key must be one of the run.sh options given by ``--known``; a typo is an error that
names the file and suggests the closest option. Values are shell-quoted, so nothing in the
config is ever executed. Lists become space-separated strings, booleans ``true``/``false``,
null an empty string.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The recipe config is unreadable or has an unknown key."""


def _to_shell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(_to_shell(v) for v in value)
    if isinstance(value, dict):
        raise ConfigError("nested mappings are not recipe options")
    return str(value)


def load_recipe_config(path: Path, known: set[str]) -> dict[str, str]:
    """Read ``path`` and return ``{option: shell string}``.

    Raises:
        ConfigError: missing file, YAML syntax error (with its line), non-mapping top level,
            or an unknown key (with the closest known option).
    """
    if not path.is_file():
        raise ConfigError(f"{path}: recipe config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; see ./run.sh --help for the options"
            raise ConfigError(f"{path}: unknown option '{key}'{hint}")
        try:
            out[key] = _to_shell(value)
        except ConfigError as e:
            raise ConfigError(f"{path}: option '{key}': {e}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="recipe config YAML")
    parser.add_argument("--known", required=True, help="comma-separated run.sh option names")
    args = parser.parse_args(argv)
    try:
        values = load_recipe_config(args.config, set(args.known.split(",")))
    except ConfigError as e:
        print(f"run.sh: {e}", file=sys.stderr)
        return 1
    for key, value in values.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
