"""A packed model: one directory (and a .tar.gz of it) with everything needed to decode raw audio.

Layout (all paths inside are relative to the pack, so it can be moved or unpacked anywhere)::

    pack.json            what is where, the system, provenance (SHA-256 of the SSL checkpoint, git commit)
    ssl/                 the SSL checkpoint (file or directory) the units were computed with; absent when
                         the pack only references it (an s3prl hub name, or --copy_ssl false)
    unit_model/          centroids.npy + unit_model.json (k-means centroids and the feature spec:
                         layer weights, hidden states, normalisation)
    layer_weights.json   step 1's learned weights and their chart (systems with learned weights)
    asr/config.yaml      the discrete-ASR training config; asr/model.pth its weights
    src_bpe/             the source (unit) BPE model and token list
    tgt_bpe/             the target BPE model (BPE targets only)
    decode.yaml          beam search settings the recipe decoded with

Decoding from a pack never reads the recipe's work directory: :func:`load_pack` resolves every path
against the pack itself.

Example:
    >>> make_pack(workdir, "twostep", "exp/pack/twostep", decode_config="conf/decode/step2_demo.yaml")  # doctest: +SKIP
    >>> pack = load_pack("exp/pack/twostep")                                                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from espnet2_ext.utils.fileio import DataError, atomic_open, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "pack.json"
SSL_DIR = "ssl"
UNIT_MODEL_DIR = "unit_model"
ASR_CONFIG = "asr/config.yaml"
ASR_MODEL = "asr/model.pth"
SRC_BPE_DIR = "src_bpe"
TGT_BPE_DIR = "tgt_bpe"
DECODE_CONFIG = "decode.yaml"
LAYER_WEIGHTS = "layer_weights.json"
_PATH_KEYS = ("bpemodel", "src_bpemodel")  # config.yaml entries that name files the model needs at inference


@dataclasses.dataclass(frozen=True)
class Pack:
    """A loaded pack: absolute paths and settings, ready for :class:`~espnet2_ext.inference.Recognizer`.

    Attributes:
        root: the pack directory.
        manifest: ``pack.json`` as loaded.
        unit_model_dir: holds centroids.npy and unit_model.json.
        upstream: the SSL model as ``{"name", "path", "cache_dir"}`` with an absolute path.
        asr_config: config.yaml with absolute paths (a file written next to the original, see
            :func:`load_pack`).
        asr_model: the discrete-ASR weights.
        decode: beam-search options (``beam_size``, ``ctc_weight``, ...).
    """

    root: Path
    manifest: Mapping[str, Any]
    unit_model_dir: Path
    upstream: Mapping[str, str | None] | None
    asr_config: Path
    asr_model: Path
    decode: Mapping[str, Any]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise DataError(f"pack: {src} not found; run the stage that writes it first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def make_pack(
    workdir: str | os.PathLike,
    system: str,
    out_dir: str | os.PathLike,
    *,
    model_file: str = "valid.acc.ave.pth",
    decode_config: str | os.PathLike | None = None,
    copy_ssl: bool = True,
    archive: bool = True,
) -> Path:
    """Pack the step-2 system ``system`` of a recipe work directory into ``out_dir``.

    Reads ``exp/step2_<system>/{config.yaml,<model_file>}``, ``exp/kmeans/<system>/`` and
    ``dump/units/<system>/src_bpe/``; the pack is built under a temporary name and renamed into place,
    then archived as ``<out_dir>.tar.gz`` (also atomically).

    Args:
        workdir: the recipe work directory.
        system: unit system name (``twostep``, ``baseline``, ...).
        out_dir: the pack directory to create (replaced if it exists).
        model_file: the step-2 checkpoint inside ``exp/step2_<system>/``.
        decode_config: YAML of beam-search options copied to ``decode.yaml``.
        copy_ssl: copy a local SSL checkpoint into the pack (False: keep a reference to its path).
        archive: also write ``<out_dir>.tar.gz``.

    Returns:
        The pack directory.
    """
    from espnet2_ext.tokenizer.unit_model import META as UNIT_META

    wd, out = Path(workdir), Path(out_dir)
    exp, km, units = wd / "exp" / f"step2_{system}", wd / "exp" / "kmeans" / system, wd / "dump" / "units" / system
    for need in (exp / "config.yaml", exp / model_file, km / UNIT_META, units / SRC_BPE_DIR / "bpe.model"):
        if not need.exists():
            raise DataError(f"pack {system}: {need} not found; run stages 7-9 for this system first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _copy(km, tmp / UNIT_MODEL_DIR)
        _copy(units / SRC_BPE_DIR, tmp / SRC_BPE_DIR)
        _copy(exp / model_file, tmp / ASR_MODEL)
        config = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
        config["src_bpemodel"] = f"{SRC_BPE_DIR}/bpe.model"
        if config.get("bpemodel"):
            _copy(Path(config["bpemodel"]), tmp / TGT_BPE_DIR / "bpe.model")
            config["bpemodel"] = f"{TGT_BPE_DIR}/bpe.model"
        with atomic_open(tmp / ASR_CONFIG) as f:
            yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
        decode = {}
        if decode_config is not None:
            decode = yaml.safe_load(Path(decode_config).read_text(encoding="utf-8")) or {}
        atomic_write_text(tmp / DECODE_CONFIG, yaml.safe_dump(decode, sort_keys=False))

        meta = json.loads((tmp / UNIT_MODEL_DIR / UNIT_META).read_text(encoding="utf-8"))
        spec = meta["feature_spec"]
        ssl: dict[str, Any] = {"included": False, "upstream": spec.get("upstream"),
                               "sha256": (spec.get("source") or {}).get("upstream_sha256")}
        upstream = spec.get("upstream")
        if upstream and upstream.get("path") and copy_ssl:
            src = Path(upstream["path"])
            _copy(src, tmp / SSL_DIR / src.name)
            ssl = {**ssl, "included": True, "upstream": {**upstream, "path": f"{SSL_DIR}/{src.name}"}}
        weights_json = (spec.get("source") or {}).get("layer_weights")
        if weights_json and Path(weights_json).is_file():
            _copy(Path(weights_json), tmp / LAYER_WEIGHTS)
            png = Path(weights_json).with_suffix(".png")
            if png.is_file():
                _copy(png, tmp / "layer_weights.png")
        manifest = {
            "format_version": FORMAT_VERSION,
            "system": system,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "feature_spec": spec.get("mode"),
            "ssl": ssl,
            "unit_model": UNIT_MODEL_DIR,
            "asr": {"config": ASR_CONFIG, "model": ASR_MODEL, "trained_from": str(exp / model_file)},
            "decode": DECODE_CONFIG,
            "layer_weights": LAYER_WEIGHTS if (tmp / LAYER_WEIGHTS).is_file() else None,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if archive:
        with atomic_open(out.with_name(out.name + ".tar.gz"), "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            tar.add(out, arcname=out.name)
    logger.info("packed %s -> %s%s", system, out, " (+ .tar.gz)" if archive else "")
    return out


def _resolve(root: Path, path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path)
    return str(p if p.is_absolute() else root / p)


def load_pack(model_dir: str | os.PathLike) -> Pack:
    """Read a pack; every relative path is resolved against the pack directory.

    The model's config.yaml names its BPE models by pack-relative paths; ESPnet opens them relative
    to the working directory, so a copy with absolute paths is written to a private temporary file
    (the pack itself is never modified and may be read-only).

    Raises:
        DataError: not a pack, a newer format, or a file it names is missing.
    """
    root = Path(model_dir).resolve()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{root}: no {MANIFEST}; --model_dir must be a directory written by the pack stage (13)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{manifest_path}: pack format {manifest.get('format_version')}, this code reads "
                        f"{FORMAT_VERSION}; repack the model with this version")
    for rel in (manifest["unit_model"], manifest["asr"]["config"], manifest["asr"]["model"]):
        if not (root / rel).exists():
            raise DataError(f"{root / rel}: missing from the pack; repack the model")
    upstream = manifest["ssl"].get("upstream")
    if upstream is not None:
        upstream = {**upstream, "path": _resolve(root, upstream.get("path"))}
        if upstream["path"] and not Path(upstream["path"]).exists():
            raise DataError(f"{manifest_path}: the SSL checkpoint {upstream['path']} does not exist; the pack "
                            "references it: copy it there or repack with --copy_ssl true")
    config = yaml.safe_load((root / manifest["asr"]["config"]).read_text(encoding="utf-8"))
    for key in _PATH_KEYS:
        if config.get(key):
            config[key] = _resolve(root, config[key])
    fd, resolved = tempfile.mkstemp(prefix="espnet2_ext_pack_", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
    decode = yaml.safe_load((root / manifest["decode"]).read_text(encoding="utf-8")) or {}
    return Pack(root=root, manifest=manifest, unit_model_dir=root / manifest["unit_model"], upstream=upstream,
                asr_config=Path(resolved), asr_model=root / manifest["asr"]["model"], decode=decode)
