"""Audio in, text out, in one process: SSL model -> fixed layer weights -> units -> discrete ASR.

ESPnet's asr2 models only decode units dumped beforehand. :class:`Recognizer` runs the whole chain
on raw 16 kHz audio from a pack (:mod:`espnet2_ext.inference.pack`): the SSL forward pass is
batched (padding never changes a frame, see :class:`~espnet2_ext.ssl.upstream.SSLUpstream`), the
units go through the same code as the recipe's unit dump (feature spec, k-means assignment, dedup,
one character per unit), the source BPE through ESPnet's own preprocessor built from the model's
config (no BPE-dropout at inference), and the beam search is ESPnet's ``Text2Text`` with the
recipe's decoding settings.

Example:
    >>> rec = Recognizer("exp/pack/twostep")                # doctest: +SKIP
    >>> rec.transcribe([wav1, wav2])                        # doctest: +SKIP
    ['HELLO WORLD', 'HALLO WELT']
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import yaml

from espnet2_ext.inference.pack import Pack, load_pack

logger = logging.getLogger(__name__)

DECODE_KEYS = ("beam_size", "ctc_weight", "lm_weight", "penalty", "maxlenratio", "minlenratio", "nbest")
"""decode.yaml options passed to ESPnet's Text2Text (other keys of an ESPnet decode config are ignored)."""


class Recognizer:
    """A packed discrete-unit ASR system that transcribes waveforms.

    Args:
        model_dir: a pack directory (stage 13).
        device: torch device for the SSL model and the ASR model.
        **decode_overrides: beam-search options that replace the pack's ``decode.yaml`` ones
            (``beam_size``, ``ctc_weight``, ...).
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", **decode_overrides: Any) -> None:
        from espnet2_ext.bin.discrete_asr_inference import Text2Text
        from espnet2_ext.tasks.discrete_asr import DiscreteASRTask
        from espnet2_ext.tokenizer.features import FeatureExtractor
        from espnet2_ext.tokenizer.unit_model import UnitModel

        self.pack: Pack = load_pack(model_dir)
        self.device = device
        unit_model = UnitModel.load(self.pack.unit_model_dir)
        if self.pack.upstream is not None:  # the pack's own copy of the SSL checkpoint (or its reference)
            spec = dataclasses.replace(unit_model.spec, upstream=dict(self.pack.upstream))
            unit_model = dataclasses.replace(unit_model, spec=spec)
        self.unit_model = unit_model
        self.extractor = FeatureExtractor(unit_model.spec).to(device).eval()
        bad = sorted(set(decode_overrides) - set(DECODE_KEYS))
        if bad:
            raise ValueError(f"unknown decoding option(s) {bad}; known: {list(DECODE_KEYS)}")
        options = {k: v for k, v in {**self.pack.decode, **decode_overrides}.items() if k in DECODE_KEYS}
        self.text2text = Text2Text(mt_train_config=str(self.pack.asr_config), mt_model_file=str(self.pack.asr_model),
                                   device=device, **options)
        train_args = argparse.Namespace(**yaml.safe_load(self.pack.asr_config.read_text(encoding="utf-8")))
        self.preprocess = DiscreteASRTask.build_preprocess_fn(train_args, train=False)
        if self.preprocess is None:
            raise ValueError(f"{self.pack.asr_config}: use_preprocessor is false; the source BPE cannot be applied")
        logger.info("Recognizer: %s (%s units, K=%d), decoding %s", self.pack.root, unit_model.spec.mode,
                    unit_model.k, options)

    @torch.no_grad()
    def units(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frame-level unit ids of each waveform (one batched SSL forward).

        Args:
            wavs: B float waveforms at 16 kHz, (T_b,) each.

        Returns:
            B int64 arrays of shape (F_b,).
        """
        if not wavs:
            return []
        lens = torch.tensor([len(w) for w in wavs], dtype=torch.long)
        batch = torch.zeros(len(wavs), int(lens.max()), dtype=torch.float32)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.as_tensor(np.asarray(w, dtype=np.float32))
        return self.unit_model.units(self.extractor, batch.to(self.device), lens.to(self.device))

    def source_text(self, units: np.ndarray) -> str:
        """The discrete-ASR source string of frame-level units (dedup, one character per unit)."""
        from espnet2_ext.tokenizer.unit_text import dedup, units_to_text

        return units_to_text(dedup(units.tolist()))

    @torch.no_grad()
    def decode_source(self, source: str, uid: str = "utt") -> str:
        """Beam-search one source string (ESPnet's source BPE, then Text2Text); the 1-best text."""
        ids = self.preprocess(uid, {"src_text": source})["src_text"]
        results = self.text2text(np.asarray(ids))
        return results[0][0] or ""

    def transcribe(self, wavs: Sequence[np.ndarray], ids: Sequence[str] | None = None) -> list[str]:
        """1-best transcripts of a batch of waveforms (16 kHz, float)."""
        sources = [self.source_text(u) for u in self.units(wavs)]
        ids = ids or [f"utt{i}" for i in range(len(wavs))]
        return [self.decode_source(s, uid) for s, uid in zip(sources, ids)]

    def __call__(self, wav: np.ndarray) -> str:
        """Transcribe one waveform."""
        return self.transcribe([wav])[0]
