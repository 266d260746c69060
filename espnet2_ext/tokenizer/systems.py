"""Unit systems: the named tokenizers of a recipe, read from ``conf/units/<recipe>.yaml``.

A units config holds k-means and BPE settings and a ``systems`` mapping::

    k: 500                        # units (K)
    portion: 0.3                  # fraction of train utterances k-means learns from
    niter: 20                     # Lloyd iterations
    seed: 0                       # subset, k-means init and sampling
    max_points_per_centroid: 256  # k-means sees at most K x this many frames
    init_points_per_centroid: 64  # its k-means++ seeding looks at K x this many of them
    bpe_vocab_size: 1000          # source BPE
    systems:
      twostep: {upstream: step0, features: learned, weights: step1_step0}
      baseline: {upstream: ssl, features: single}      # or single:<L>
      mfcc: {features: mfcc, k: 100}                   # any setting above may be overridden per system

``upstream: X`` reads ``exp/X/upstream.json``; ``weights: Y`` reads ``exp/Y/layer_weights.json``
(``learned`` only); ``normalize_layers`` applies to ``single`` and ``uniform`` (``learned`` takes
step 1's). Unknown keys are errors that name the file.

Example:
    >>> systems = load_units_config("conf/units/demo.yaml")                  # doctest: +SKIP
    >>> systems["twostep"].feature_spec("egs2/demo/asr2").describe()         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from espnet2_ext.tokenizer.features import FeatureSpec, read_upstream_json
from espnet2_ext.utils.fileio import DataError

_SETTINGS = {"k": int, "portion": float, "niter": int, "seed": int, "max_points_per_centroid": int,
             "init_points_per_centroid": int, "bpe_vocab_size": int}
_SYSTEM_KEYS = {"upstream", "features", "weights", "normalize_layers", *_SETTINGS}


@dataclasses.dataclass(frozen=True)
class UnitSystem:
    """One tokenizer: where its features come from and how its units are learned.

    Attributes:
        name: the system name (``exp/kmeans/<name>``, ``dump/units/<name>``).
        features: ``learned``, ``single``, ``single:<L>``, ``uniform`` or ``mfcc``.
        upstream: experiment dir holding ``upstream.json`` (``ssl``, ``step0``); None for mfcc.
        weights: experiment dir holding ``layer_weights.json`` (``learned`` only).
        normalize_layers: for ``single`` / ``uniform``.
        k, portion, niter, seed, max_points_per_centroid, init_points_per_centroid, bpe_vocab_size:
            see the module doc.
    """

    name: str
    features: str
    upstream: str | None = None
    weights: str | None = None
    normalize_layers: bool = False
    k: int = 500
    portion: float = 0.3
    niter: int = 20
    seed: int = 0
    max_points_per_centroid: int = 256
    init_points_per_centroid: int = 64
    bpe_vocab_size: int = 1000

    @property
    def chain(self) -> str:
        """The chain of run.sh's stages 4-10 that builds it (``--parallel_chains``): ``step0`` when it reads
        the step-0 model (``upstream: step0``) or weights learned on it (``weights: step1_step0``), else
        ``ssl`` (the pre-trained model, or no SSL model for mfcc): those need nothing of step 0."""
        weights_upstream = self.weights.removeprefix("step1_") if self.weights else None  # step1_<X>: learned on X
        return "step0" if "step0" in (self.upstream, weights_upstream) else "ssl"

    def feature_spec(self, workdir: str | os.PathLike) -> FeatureSpec:
        """The system's :class:`FeatureSpec`, from ``exp/<upstream>/upstream.json`` (and step 1's weights)."""
        exp = Path(workdir) / "exp"
        info = None if self.upstream is None else read_upstream_json(exp / self.upstream / "upstream.json")
        weights = None if self.weights is None else exp / self.weights / "layer_weights.json"
        return FeatureSpec.parse(self.features, info, weights, self.normalize_layers)

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return dataclasses.asdict(self)


def _check_keys(where: str, data: Mapping, known: set[str]) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise DataError(f"{where}: unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close else
                                                               f"; expected {sorted(known)}"))


def load_units_config(path: str | os.PathLike) -> dict[str, UnitSystem]:
    """Every system of a units config, in file order.

    Raises:
        DataError: unreadable file, unknown key, a bad value or an inconsistent system.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: units config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("systems"), dict) or not data["systems"]:
        raise DataError(f"{path}: expected a mapping with a non-empty 'systems' mapping")
    _check_keys(str(path), data, {*_SETTINGS, "systems"})
    systems = {}
    for name, conf in data["systems"].items():
        where = f"{path}: system '{name}'"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
            # names become paths, shell list items, and exp/step2_<name>.seed<S> for step-2 seed repeats
            raise DataError(f"{where}: a system name may hold only letters, digits, '_' and '-'")
        if not isinstance(conf, dict) or "features" not in conf:
            raise DataError(f"{where}: expected a mapping with 'features' (learned, single[:L], uniform or mfcc)")
        _check_keys(where, conf, _SYSTEM_KEYS)
        merged = {k: v for k, v in data.items() if k != "systems"} | conf
        try:
            settings = {k: cast(merged[k]) for k, cast in _SETTINGS.items() if k in merged}
            system = UnitSystem(name=str(name), features=str(conf["features"]), upstream=conf.get("upstream"),
                                weights=conf.get("weights"), normalize_layers=bool(conf.get("normalize_layers", False)),
                                **settings)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: {e}") from None
        mode = system.features.partition(":")[0]
        if (mode == "mfcc") != (system.upstream is None):
            raise DataError(f"{where}: 'upstream' (ssl or step0) is required for SSL features and not allowed for mfcc")
        if (mode == "learned") != (system.weights is not None):
            raise DataError(f"{where}: 'weights' (a step-1 run such as step1_step0) goes with features 'learned' only")
        if (not 0 < system.portion <= 1 or system.k < 1 or system.niter < 1 or system.max_points_per_centroid < 1
                or system.init_points_per_centroid < 1):
            raise DataError(f"{where}: need 0 < portion <= 1, k >= 1, niter >= 1 and max_points_per_centroid, "
                            "init_points_per_centroid >= 1")
        systems[system.name] = system
    return systems


def select_systems(systems: Mapping[str, UnitSystem], names: str, chain: str = "") -> list[UnitSystem]:
    """The systems named in ``names`` (space- or comma-separated; empty: all) of ``chain`` (empty: any), in config order."""
    wanted = [n for n in names.replace(",", " ").split() if n]
    unknown = [n for n in wanted if n not in systems]
    if unknown:
        raise DataError(f"unknown unit system(s) {unknown}; the units config defines {list(systems)}")
    return [s for name, s in systems.items() if (not wanted or name in wanted) and chain in ("", s.chain)]
