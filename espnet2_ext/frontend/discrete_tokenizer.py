"""The discrete-tokenizer frontend: raw audio in, unit ids out, through a saved unit model.

ESPnet's asr2 models read units that were dumped beforehand; they cannot decode audio. This
frontend closes the gap: it loads a unit model (``exp/kmeans/<system>``: centroids + feature
spec), computes the spec's features with the same
:class:`~espnet2_ext.tokenizer.features.FeatureExtractor` the unit dump uses, and labels every
frame with the nearest centroid, so a packed model gets exactly the units it was trained on.
:meth:`DiscreteTokenizerFrontend.unit_strings` goes on to the discrete-ASR source text
(dedup + one character per unit).

Example config (``frontend_conf``)::

    frontend: discrete_tokenizer
    frontend_conf:
        unit_model: exp/kmeans/twostep

Example:
    >>> frontend = DiscreteTokenizerFrontend("exp/kmeans/twostep")     # doctest: +SKIP
    >>> units, lens = frontend(wavs, wav_lens)                          # doctest: +SKIP
    >>> units.shape, units.dtype                                        # doctest: +SKIP
    (torch.Size([2, 49]), torch.int64)
"""

from __future__ import annotations

import logging
import os

import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet2_ext.tokenizer.features import FeatureExtractor
from espnet2_ext.tokenizer.unit_model import UnitModel
from espnet2_ext.tokenizer.unit_text import dedup, units_to_text

logger = logging.getLogger(__name__)

PAD_UNIT = -1
"""Fill value past each utterance's length (ESPnet's ``ignore_id``)."""


class DiscreteTokenizerFrontend(AbsFrontend):
    """Waveforms -> frame-level unit ids of a unit model (no trainable parameters).

    Args:
        unit_model: directory of a saved :class:`~espnet2_ext.tokenizer.unit_model.UnitModel`.
        fs: input sampling rate; must be 16 kHz.

    The SSL upstream inside is frozen, in eval mode, and left out of the state dict (it is rebuilt
    from the unit model's feature spec), so a model holding this frontend saves only its own weights.
    """

    @typechecked
    def __init__(self, unit_model: str | os.PathLike, fs: int = 16000) -> None:
        super().__init__()
        if fs != 16000:
            raise ValueError(f"DiscreteTokenizerFrontend: the unit model takes 16000 Hz audio, got fs={fs}")
        self.unit_model = UnitModel.load(unit_model)
        self.extractor = FeatureExtractor(self.unit_model.spec)
        self.extractor.requires_grad_(False)
        self.register_state_dict_post_hook(_drop_extractor)
        logger.info("DiscreteTokenizerFrontend: K=%d units of %s", self.unit_model.k, self.unit_model.spec.describe())

    def output_size(self) -> int:
        """Size of the unit vocabulary K (the output holds ids, not feature vectors)."""
        return self.unit_model.k

    def train(self, mode: bool = True) -> DiscreteTokenizerFrontend:
        """Stays in eval mode: the tokenizer is fixed."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit ids of a padded batch.

        Args:
            input: (B, T) float waveforms at 16 kHz.
            input_lengths: (B,) lengths in samples.

        Returns:
            units: (B, F) long unit ids in [0, K), :data:`PAD_UNIT` past each length.
            units_lens: (B,) long frames per utterance.
        """
        per_utt = self.unit_model.units(self.extractor, input, input_lengths)
        lens = torch.tensor([len(u) for u in per_utt], dtype=torch.long)
        units = torch.full((len(per_utt), int(lens.max()) if len(lens) else 0), PAD_UNIT, dtype=torch.long)
        for row, u in enumerate(per_utt):
            units[row, : len(u)] = torch.from_numpy(u)
        return units.to(input.device), lens.to(input.device)

    def unit_strings(self, input: torch.Tensor, input_lengths: torch.Tensor) -> list[str]:
        """The discrete-ASR source text of each utterance: deduplicated units, one character each."""
        units, lens = self(input, input_lengths)
        return [units_to_text(dedup(u[:n].tolist())) for u, n in zip(units.cpu(), lens.tolist())]


def _drop_extractor(module: DiscreteTokenizerFrontend, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """The extractor is rebuilt from the unit model; its (SSL) tensors are not the model's to save."""
    for key in [k for k in state_dict if k.startswith(prefix + "extractor.")]:
        del state_dict[key]
