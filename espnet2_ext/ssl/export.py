"""Write a (fine-tuned) SSL upstream back to disk as a standalone checkpoint, and read step-0 models.

Step 0 fine-tunes the SSL model inside an ESPnet ASR model (``frontend: ssl`` with
``freeze_upstream: false``), so its weights end up in an ESPnet ``*.pth`` under
``frontend.upstream.*``. Later stages (step 1, k-means) load SSL models through
:class:`~espnet2_ext.ssl.upstream.SSLUpstream` only, so the fine-tuned weights must become a
checkpoint of the same format family the original was loaded from:

============================================  ==============================================================
original upstream                             export (``out`` is a directory) and the spec returned
============================================  ==============================================================
``hf_wav2vec2_custom``, ``hf_hubert_custom``  ``save_pretrained`` files in ``out`` with the original's
                                              ``config.json`` and ``preprocessor_config.json``; same name,
                                              path ``out``
``hubert_local``, ``wav2vec2_local``,         ``out/model.pt``: the original dict (configs, dictionaries)
``wavlm_local``                               with the weights replaced; same name
s3prl hub names stored in one of those        the same, from the cached download; the matching ``*_local``
dict formats (``xls_r_300m``,                 name (``xls_r_300m`` -> ``wav2vec2_local``)
``wavlm_large``, ``hubert_large_ll60k``)
``espnet_hubert_local``                       ``out/model.pth`` (the original ESPnet state dict with the
                                              HuBERT weights replaced) and ``out/config.yaml``; path ``out``
============================================  ==============================================================

Every other upstream is a ``ValueError``. The whole directory is written under ``out.tmp`` and
renamed into place, so a killed export never leaves a half-written checkpoint at ``out``.

Example:
    >>> spec = UpstreamSpec.from_dict(json.load(open("exp/ssl/upstream.json"))["upstream"])   # doctest: +SKIP
    >>> upstream = load_step0_upstream("exp/step0/valid.loss.ave.pth", spec)                    # doctest: +SKIP
    >>> export_upstream(upstream, Path("exp/step0/upstream"))                                   # doctest: +SKIP
    UpstreamSpec(name='hf_wav2vec2_custom', path='exp/step0/upstream', cache_dir=None)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec, _load_state, infer_upstream_name

logger = logging.getLogger(__name__)

STEP0_PREFIX = "frontend.upstream."
"""Where an ESPnet ASR model with ``frontend: ssl`` keeps the SSLUpstream's tensors."""

_HF_FORMATS = ("hf_wav2vec2_custom", "hf_hubert_custom")
# s3prl's converted dict formats: the key holding the model's state dict.
_DICT_WEIGHTS = {"hubert_local": "model_weight", "wav2vec2_local": "model_weight", "wavlm_local": "model"}
_ESPNET_FORMAT = "espnet_hubert_local"
_ESPNET_PREFIX = "encoder.hubert_pretrain_model."  # where ESPnet's HubertTask model keeps torchaudio's HuBERT
EXPORT_FORMATS = (*_HF_FORMATS, *_DICT_WEIGHTS, _ESPNET_FORMAT)
"""Upstream names :func:`export_upstream` writes (plus hub names stored in a dict format)."""


def export_format(upstream: SSLUpstream) -> str:
    """The local upstream name the export of ``upstream`` is loaded with (see the module table).

    Raises:
        ValueError: the upstream's checkpoint is not in a format this module can write.
    """
    name = upstream.spec.name
    if name in EXPORT_FORMATS:
        return name
    if not upstream.spec.takes_path:
        files = upstream.checkpoint_files
        if len(files) == 1 and files[0].is_file():
            try:
                stored = infer_upstream_name(files[0])
            except ValueError:
                stored = None
            if stored in _DICT_WEIGHTS:
                return stored
        raise ValueError(
            f"s3prl hub entry {name!r} is stored as {[str(f) for f in files]}, not in one of s3prl's converted "
            f"dict formats {sorted(_DICT_WEIGHTS)}; export supports those hub entries and the local upstreams "
            f"{list(EXPORT_FORMATS)}"
        )
    raise ValueError(
        f"cannot export upstream {name!r}: export writes only the formats {list(EXPORT_FORMATS)} "
        "(and s3prl hub entries stored as hubert/wav2vec2/wavlm dicts)"
    )


def export_upstream(upstream: SSLUpstream, out: str | os.PathLike) -> UpstreamSpec:
    """Write ``upstream``'s current weights as a standalone checkpoint in the directory ``out``.

    The checkpoint is in the format family ``upstream`` was loaded from (module table), loads with
    :class:`SSLUpstream` and gives the same hidden states. An existing ``out`` is replaced.

    Args:
        upstream: the (fine-tuned) upstream; its spec says where the original checkpoint is.
        out: output directory.

    Returns:
        The spec that loads the export (``cache_dir`` None: nothing is downloaded).

    Raises:
        ValueError: an unsupported format, or an original checkpoint that does not hold every
            tensor of the model (the export would silently keep stale weights).
    """
    fmt = export_format(upstream)  # before anything is written
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = upstream.upstream.upstream.model  # the s3prl expert's model: what the checkpoint stores
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fmt in _HF_FORMATS:
        template = Path(upstream.spec.path)
        model.save_pretrained(tmp)
        # SSLUpstream switches layerdrop and SpecAugment off on the loaded config; the export keeps
        # the original's settings (same architecture by construction).
        for name in ("config.json", "preprocessor_config.json"):
            shutil.copy(template / name, tmp / name)
        path = out
    elif fmt in _DICT_WEIGHTS:
        source = _source_file(upstream, None)
        state = _load_state(source)
        key = _DICT_WEIGHTS[fmt]
        if not isinstance(state.get(key), Mapping):
            raise ValueError(f"{source}: expected the model weights under {key!r} ({fmt} format)")
        state[key] = _replaced(state[key], weights, "", source)
        torch.save(state, tmp / "model.pt")
        path = out / "model.pt"
    else:
        source = _source_file(upstream, ".pth")
        state = _replaced(_load_state(source), weights, _ESPNET_PREFIX, source)
        torch.save(state, tmp / "model.pth")
        shutil.copy(source.parent / "config.yaml", tmp / "config.yaml")
        path = out
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    logger.info("exported upstream %s (%d tensors) as %s to %s", upstream.spec.name, len(weights), fmt, path)
    return UpstreamSpec(fmt, path=str(path))


def load_step0_upstream(
    model_file: str | os.PathLike, spec: UpstreamSpec, *, frozen: bool = True, prefix: str = STEP0_PREFIX
) -> SSLUpstream:
    """Build ``SSLUpstream(spec)`` and load the fine-tuned weights of a step-0 ESPnet checkpoint.

    ESPnet loads model files with ``strict=False``; this does not: every tensor of the upstream
    must be in the file under ``prefix``, with its shape, and nothing else may be there.

    Args:
        model_file: an ESPnet ``*.pth`` state dict (``valid.loss.best.pth``, an averaged model, an
            epoch checkpoint) of an ASR model with a trainable ``frontend: ssl``.
        spec: the upstream the model was fine-tuned from (``frontend_conf.upstream``).
        frozen: the mode of the returned upstream (see :class:`SSLUpstream`).
        prefix: where the upstream's tensors sit in the ESPnet model.

    Raises:
        ValueError: the file holds no or not all of the upstream's tensors, or tensors of another model.
    """
    upstream = SSLUpstream(spec, frozen=frozen)
    state = _load_state(Path(model_file))
    if isinstance(state.get("module"), Mapping):  # DeepSpeed checkpoint
        state = state["module"]
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not found:
        raise ValueError(
            f"{model_file}: no '{prefix}*' tensors; not a step-0 model (a frozen upstream is never saved: "
            "step 0 trains with frontend_conf.freeze_upstream false)"
        )
    expected = upstream.state_dict()
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if found[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{model_file}: the '{prefix}*' tensors do not match upstream {spec.name!r} ({spec.path or 'hub'}): "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}; was the model fine-tuned from this upstream?"
        )
    upstream.load_state_dict(found, strict=True)
    logger.info("loaded %d fine-tuned upstream tensors from %s", len(found), model_file)
    return upstream


def _source_file(upstream: SSLUpstream, suffix: str | None) -> Path:
    """The original checkpoint file of a file-based upstream (``suffix``: pick the file ending so)."""
    files = [f for f in upstream.checkpoint_files if suffix is None or f.suffix == suffix]
    if len(files) != 1:
        raise ValueError(
            f"upstream {upstream.spec.name!r}: expected one checkpoint file, found {[str(f) for f in files]}"
        )
    return files[0]


def _replaced(original: Mapping, weights: Mapping[str, torch.Tensor], prefix: str, source: Path) -> dict:
    """``original`` with ``prefix + k`` set to ``weights[k]`` (original dtype) for every ``k``."""
    missing = sorted(k for k in weights if prefix + k not in original)
    wrong = sorted(k for k in weights if prefix + k in original and original[prefix + k].shape != weights[k].shape)
    if missing or wrong:
        raise ValueError(
            f"{source}: does not hold the upstream's tensors: {len(missing)} missing {missing[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}; the model was not loaded from this file"
        )
    state = dict(original)
    for k, v in weights.items():
        state[prefix + k] = v.to(dtype=original[prefix + k].dtype).clone()
    return state
