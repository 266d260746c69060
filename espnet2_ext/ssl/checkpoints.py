"""Tiny random-init SSL checkpoints in the exact on-disk formats s3prl's local upstreams read.

Tests and the offline demo cannot download XLS-R, so they build a few-kilobyte model of the same
architecture family and save it the way the real checkpoint ships:

======================  ===========================================================================
upstream name           what is written
======================  ===========================================================================
``hf_wav2vec2_custom``  ``save_pretrained`` directory of ``transformers.Wav2Vec2Model``
                        (``config.json``, ``model.safetensors``, ``preprocessor_config.json``),
                        like ``facebook/wav2vec2-xls-r-300m``
``hf_hubert_custom``    the same for ``transformers.HubertModel``
``hubert_local``        ``.pt`` dict ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}``
                        of s3prl's own (fairseq-free) HuBERT
``wav2vec2_local``      ``.pt`` dict ``{task_cfg, model_cfg, model_weight}`` of s3prl's own
                        wav2vec 2.0 (the format of s3prl's converted ``xls_r_300m``)
``wavlm_local``         ``.pt`` dict ``{cfg, model}`` of s3prl's WavLM (the challenge baseline family)
``espnet_hubert_local`` directory with an ESPnet ``HubertTask`` model ``model.pth`` and its
                        ``config.yaml`` side by side
======================  ===========================================================================

Every tiny model keeps the real 7-layer conv stack strides (320 samples per frame, 400-sample
receptive field) with few channels, so lengths behave exactly like the full-size models.
``extractor_norm="layer"`` is the XLS-R / large-model style (a LayerNorm per conv block);
``"group"`` is the wav2vec2-base / HuBERT-base style (one GroupNorm over time in the first block),
which is not padding-safe and makes :class:`~espnet2_ext.ssl.upstream.SSLUpstream` fall back to
per-utterance forwarding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch

ExtractorNorm = Literal["layer", "group"]

# (kernel, stride) of wav2vec 2.0 / HuBERT / WavLM / XLS-R conv feature extractors.
_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def _fairseq_conv_layers(channels: int) -> str:
    """The fairseq-style ``conv_feature_layers`` string with ``channels`` per layer."""
    return repr([(channels, k, s) for k, s in zip(_CONV_KERNELS, _CONV_STRIDES)])


def _fairseq_extractor_mode(norm: ExtractorNorm) -> str:
    return {"layer": "layer_norm", "group": "default"}[norm]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A context in which weight init is reproducible without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_tiny_hf_wav2vec2(
    out_dir: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    conv_channels: int = 32,
    extractor_norm: ExtractorNorm = "layer",
    seed: int = 0,
    hubert: bool = False,
) -> Path:
    """Write a tiny ``transformers`` Wav2Vec2Model (or HubertModel) ``save_pretrained`` directory.

    ``extractor_norm="layer"`` mirrors XLS-R's config (``feat_extract_norm: layer``,
    ``do_stable_layer_norm: true``, conv bias); ``"group"`` mirrors wav2vec2-base.
    The feature extractor config (``do_normalize``, ``return_attention_mask``) is XLS-R's.

    Returns:
        ``out_dir`` (load it with upstream ``hf_wav2vec2_custom`` / ``hf_hubert_custom``).
    """
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config_cls, model_cls = (HubertConfig, HubertModel) if hubert else (Wav2Vec2Config, Wav2Vec2Model)
    layer_style = extractor_norm == "layer"
    config = config_cls(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(conv_channels,) * len(_CONV_KERNELS),
        conv_kernel=_CONV_KERNELS,
        conv_stride=_CONV_STRIDES,
        conv_bias=layer_style,
        feat_extract_norm=extractor_norm,
        do_stable_layer_norm=layer_style,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    with _seeded(seed):
        model = model_cls(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out_dir)
    return out_dir


def write_tiny_hf_hubert(out_dir: str | os.PathLike, **kwargs) -> Path:
    """:func:`write_tiny_hf_wav2vec2` for ``transformers.HubertModel`` (upstream ``hf_hubert_custom``)."""
    return write_tiny_hf_wav2vec2(out_dir, hubert=True, **kwargs)


def _encoder_cfg(num_layers: int, hidden_size: int, conv_channels: int, extractor_norm: ExtractorNorm) -> dict:
    """Fields shared by s3prl's HubertConfig and Wav2Vec2Config (fairseq names)."""
    return {
        "extractor_mode": _fairseq_extractor_mode(extractor_norm),
        "encoder_layers": num_layers,
        "encoder_embed_dim": hidden_size,
        "encoder_ffn_embed_dim": 2 * hidden_size,
        "encoder_attention_heads": 2,
        "conv_feature_layers": _fairseq_conv_layers(conv_channels),
        "conv_bias": extractor_norm == "layer",
        "layer_norm_first": extractor_norm == "layer",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "final_dim": 16,
    }


def write_tiny_hubert_local(
    path: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    conv_channels: int = 32,
    extractor_norm: ExtractorNorm = "layer",
    seed: int = 0,
) -> Path:
    """Write a tiny s3prl ``hubert_local`` checkpoint (a converted fairseq HuBERT, no fairseq needed).

    Configs are saved as plain dicts so the file loads with ``torch.load(weights_only=True)``.
    """
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    task_cfg = HubertPretrainingConfig(normalize=extractor_norm == "layer")
    model_cfg = HubertConfig(label_rate=50.0, **_encoder_cfg(num_layers, hidden_size, conv_channels, extractor_norm))
    symbols = [["<s>", "<pad>", "</s>", "<unk>", *map(str, range(8))]]
    with _seeded(seed):
        model = HubertModel(model_cfg, task_cfg, symbols)
    return _save(
        path,
        {
            "task_cfg": dataclasses.asdict(task_cfg),
            "model_cfg": dataclasses.asdict(model_cfg),
            "model_weight": model.state_dict(),
            "dictionaries_symbols": symbols,
        },
    )


def write_tiny_wav2vec2_local(
    path: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    conv_channels: int = 32,
    extractor_norm: ExtractorNorm = "layer",
    seed: int = 0,
) -> Path:
    """Write a tiny s3prl ``wav2vec2_local`` checkpoint (s3prl's converted format, no fairseq needed).

    With ``extractor_norm="layer"`` this is the XLS-R architecture (quantizer included, as in
    the pre-trained checkpoint).
    """
    from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model

    task_cfg = AudioPretrainingConfig(normalize=extractor_norm == "layer")
    model_cfg = Wav2Vec2Config(
        quantize_targets=True,
        latent_vars=8,
        latent_groups=2,
        **_encoder_cfg(num_layers, hidden_size, conv_channels, extractor_norm),
    )
    with _seeded(seed):
        model = Wav2Vec2Model(model_cfg)
    return _save(
        path,
        {
            "task_cfg": dataclasses.asdict(task_cfg),
            "model_cfg": dataclasses.asdict(model_cfg),
            "model_weight": model.state_dict(),
        },
    )


def write_tiny_wavlm_local(
    path: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    conv_channels: int = 32,
    extractor_norm: ExtractorNorm = "layer",
    seed: int = 0,
) -> Path:
    """Write a tiny s3prl ``wavlm_local`` checkpoint ``{"cfg": dict, "model": state_dict}``."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = {
        **{
            k: v
            for k, v in _encoder_cfg(num_layers, hidden_size, conv_channels, extractor_norm).items()
            if k != "final_dim"
        },
        "normalize": extractor_norm == "layer",
        "relative_position_embedding": True,
        "num_buckets": 32,
        "max_distance": 128,
        "gru_rel_pos": True,
    }
    with _seeded(seed):
        model = WavLM(WavLMConfig(cfg))
    return _save(path, {"cfg": cfg, "model": model.state_dict()})


def write_tiny_espnet_hubert(
    out_dir: str | os.PathLike,
    *,
    num_layers: int = 2,
    hidden_size: int = 32,
    conv_channels: int = 32,
    extractor_norm: ExtractorNorm = "layer",
    seed: int = 0,
) -> Path:
    """Write a tiny ESPnet ``HubertTask`` model (torchaudio HuBERT) as ``model.pth`` + ``config.yaml``.

    ``config.yaml`` holds the arguments ``HubertTask.build_model`` reads (a training run's
    config has many more, which loading ignores).

    Returns:
        ``out_dir`` (load it with upstream ``espnet_hubert_local``).
    """
    import argparse

    import yaml
    from espnet2.tasks.hubert import HubertTask

    tokens = ["<blank>", "<unk>", *map(str, range(8)), "<sos/eos>"]
    config = {
        "token_list": tokens,
        "input_size": 1,  # raw waveform in, no ESPnet frontend (as ESPnet's SSL recipes do)
        "frontend": None,
        "frontend_conf": {},
        "specaug": None,
        "specaug_conf": {},
        "normalize": None,
        "normalize_conf": {},
        "preencoder": None,
        "preencoder_conf": {},
        "encoder": "torchaudio_hubert",
        "encoder_conf": {
            "extractor_mode": f"{extractor_norm}_norm",
            "extractor_conv_layer_config": [[conv_channels, k, s] for k, s in zip(_CONV_KERNELS, _CONV_STRIDES)],
            "extractor_conv_bias": extractor_norm == "layer",
            "encoder_embed_dim": hidden_size,
            "encoder_pos_conv_kernel": 16,
            "encoder_pos_conv_groups": 4,
            "encoder_num_layers": num_layers,
            "encoder_num_heads": 2,
            "encoder_ff_interm_features": 2 * hidden_size,
            "encoder_layer_norm_first": extractor_norm == "layer",
            "final_dim": 16,
        },
        "num_classes": 8,
        "model": "torchaudio",
        "model_conf": {},
        "init": None,
    }
    with _seeded(seed):
        model = HubertTask.build_model(argparse.Namespace(**config))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    torch.save(model.state_dict(), out_dir / "model.pth")
    return out_dir


def _save(path: str | os.PathLike, state: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


TINY_WRITERS: dict[str, Callable[..., Path]] = {
    "hf_wav2vec2_custom": write_tiny_hf_wav2vec2,
    "hf_hubert_custom": write_tiny_hf_hubert,
    "hubert_local": write_tiny_hubert_local,
    "wav2vec2_local": write_tiny_wav2vec2_local,
    "wavlm_local": write_tiny_wavlm_local,
    "espnet_hubert_local": write_tiny_espnet_hubert,
}
"""Upstream name -> writer. Writers take ``(path, *, num_layers, hidden_size, conv_channels,
extractor_norm, seed)``; the path is a directory for the HF and ESPnet formats, a ``.pt`` file
otherwise."""


def write_tiny_checkpoint(name: str, path: str | os.PathLike, **kwargs) -> Path:
    """Write a tiny checkpoint for upstream ``name`` at ``path`` (see :data:`TINY_WRITERS`)."""
    if name not in TINY_WRITERS:
        raise ValueError(f"no tiny checkpoint writer for upstream {name!r}; choose from {sorted(TINY_WRITERS)}")
    return TINY_WRITERS[name](path, **kwargs)
