"""The step-1 frontend: a learnable SUPERB-style weighted sum of an SSL model's hidden states.

:class:`SSLFrontend` turns 16 kHz waveforms into features for an ESPnet ASR encoder. It runs an
:class:`~espnet2_ext.ssl.upstream.SSLUpstream` (exact frame counts, padding never changes a frame)
and combines its hidden states in one of three ways:

* ``layer_selection: weighted`` -- ``sum_i softmax(layer_weights)_i * h_i`` over all hidden states
  (or the subset ``layers``); ``layer_weights`` are logits initialised to zeros (uniform weights).
  After step-1 training ``softmax(layer_weights)`` says how much each layer contributes to ASR;
  step 2 freezes those weights for k-means.
* ``layer_selection: last`` -- the top hidden state (step-0 fine-tuning, CTC on the last layer).
* ``layer_selection: <int>`` -- one hidden state (the single-layer baseline; negative counts from
  the top, Python-style).

With ``normalize_layers: true`` every selected hidden state goes through a layer norm over its
feature dimension without affine parameters before the sum (SUPERB's featurizer does the same), so
layers with large activations cannot dominate the sum by scale alone.

A frozen upstream (``freeze_upstream: true``, the step-1 setting) is a fixed function of the SSL
checkpoint named in ``upstream``: it stays in eval mode even when the trainer calls
``model.train()``, gets no gradients, and its tensors are **left out of the state dict** (and not
required when loading one), so an epoch checkpoint holds only what training changed
(``frontend.layer_weights``, the encoder, ...) instead of 1 GB+ of XLS-R weights. Rebuilding the
model from ``config.yaml`` reloads the upstream from its checkpoint path. A trainable upstream
(``freeze_upstream: false``, step 0) is saved like any other module.

Example config (``frontend_conf`` of an ESPnet ASR config)::

    frontend: ssl
    frontend_conf:
        upstream: {name: xls_r_300m, path: null, cache_dir: /data/s3prl}
        freeze_upstream: true
        layer_selection: weighted
        normalize_layers: false
"""

from __future__ import annotations

import logging

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from torch import nn
from typeguard import typechecked

from espnet2_ext.ssl.upstream import SAMPLE_RATE, SSLUpstream, UpstreamSpec

logger = logging.getLogger(__name__)

LAYER_SELECTIONS = ("weighted", "last")
"""Named ``layer_selection`` values; an int selects one hidden state."""

_UPSTREAM = "upstream"  # the attribute (and state-dict key component) holding the SSLUpstream


class SSLFrontend(AbsFrontend):
    """SSL hidden states -> one feature sequence (weighted sum, last layer, or one layer).

    Args:
        upstream: the SSL model as :meth:`UpstreamSpec.to_dict` (``{"name", "path", "cache_dir"}``).
        freeze_upstream: True (step 1): the upstream is fixed, in eval mode, without gradients and
            not part of the state dict. False (step 0): the upstream's transformer is trained and
            saved (its conv feature extractor stays frozen, see :class:`SSLUpstream`).
        layer_selection: ``"weighted"`` (learnable softmax-weighted sum), ``"last"`` (top hidden
            state) or an int (that hidden state; negative counts from the top).
        layers: hidden-state indices the weighted sum runs over (default: all of them). Only with
            ``layer_selection: weighted``.
        normalize_layers: layer-norm (no affine) each selected hidden state over its feature
            dimension before combining.
        fs: input sampling rate (an int or a string such as ``"16k"``); must be 16 kHz.

    Raises:
        ValueError: a bad spec, sampling rate, selection or layer index.

    Example:
        >>> spec = UpstreamSpec.from_path("exp/ssl/xlsr_ft").to_dict()        # doctest: +SKIP
        >>> frontend = SSLFrontend(upstream=spec, layer_selection="weighted")  # doctest: +SKIP
        >>> feats, feats_lens = frontend(wavs, wav_lens)                       # doctest: +SKIP
        >>> feats.shape, frontend.layer_weights_softmax()                      # doctest: +SKIP
        (torch.Size([2, 49, 1024]), tensor([0.0400, 0.0400, ...]))
    """

    @typechecked
    def __init__(
        self,
        upstream: dict,
        freeze_upstream: bool = True,
        layer_selection: str | int = "weighted",
        layers: list[int] | None = None,
        normalize_layers: bool = False,
        fs: int | str = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        rate = humanfriendly.parse_size(fs) if isinstance(fs, str) else fs
        if rate != SAMPLE_RATE:
            raise ValueError(
                f"SSLFrontend: SSL upstreams take {SAMPLE_RATE} Hz audio, got fs={fs!r}; resample the data"
            )
        _check_selection(layer_selection, layers)  # before the (slow) upstream load
        self.spec = UpstreamSpec.from_dict(upstream)
        self.normalize_layers = normalize_layers
        self.layer_selection = layer_selection
        self.upstream = SSLUpstream(self.spec, frozen=freeze_upstream)
        self.layers = _selected_layers(layer_selection, layers, self.upstream.num_hidden_states)
        if layer_selection == "weighted":
            # logits; zeros = uniform weights, as in SUPERB's featurizer
            self.layer_weights = nn.Parameter(torch.zeros(len(self.layers)))
        else:
            self.register_parameter("layer_weights", None)
        # The hooks check freeze_upstream when they run, so they are harmless for a trainable one.
        self.register_state_dict_post_hook(_drop_frozen_upstream)
        self.register_load_state_dict_pre_hook(_remember_load_prefix)
        self.register_load_state_dict_post_hook(_forgive_frozen_upstream)
        logger.info(
            "SSLFrontend: %s upstream %s, layer_selection=%s over hidden states %s, normalize_layers=%s",
            "frozen" if freeze_upstream else "trainable",
            self.spec.name,
            layer_selection,
            self.layers,
            normalize_layers,
        )

    @property
    def freeze_upstream(self) -> bool:
        """Whether the upstream is frozen (then it is also left out of the state dict)."""
        return self.upstream.frozen

    def output_size(self) -> int:
        """Feature dimension D (the upstream's hidden size)."""
        return self.upstream.hidden_size

    def layer_weights_softmax(self, full: bool = False) -> torch.Tensor:
        """The weight of each selected hidden state in the output.

        Args:
            full: False: one weight per entry of :attr:`layers`. True: one weight per hidden state
                of the upstream (``num_hidden_states``), zero for states not selected.

        Returns:
            (len(layers),) or (num_hidden_states,) float tensor summing to 1; for ``last`` / an int
            selection the single selected state has weight 1. Carries gradients for ``weighted``.
        """
        if self.layer_weights is not None:
            weights = torch.softmax(self.layer_weights, dim=0)
        else:
            weights = torch.ones(1, device=self._device)
        if not full:
            return weights
        out = torch.zeros(self.upstream.num_hidden_states, dtype=weights.dtype, device=weights.device)
        return out.index_add(0, torch.tensor(self.layers, device=weights.device), weights)

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute features of a padded batch.

        Args:
            input: (B, T) float waveforms at 16 kHz.
            input_lengths: (B,) lengths in samples.

        Returns:
            feats: (B, F, D) features, F = max(feats_lens); frames past an utterance's length are zero.
            feats_lens: (B,) long, frames per utterance (the upstream's exact frame counts).
        """
        states, feats_lens = self.upstream(input, input_lengths)
        selected = [states[i] for i in self.layers]
        if self.normalize_layers:
            selected = [nn.functional.layer_norm(h, h.shape[-1:]) for h in selected]
        if self.layer_weights is None:
            feats = selected[0]
        else:
            weights = self.layer_weights_softmax().to(selected[0].dtype)
            feats = weights[0] * selected[0]
            for weight, h in zip(weights[1:], selected[1:]):
                feats = feats + weight * h
        pad = torch.arange(feats.size(1), device=feats.device)[None, :] >= feats_lens[:, None]
        return feats.masked_fill(pad[..., None], 0.0), feats_lens

    def reload_pretrained_parameters(self) -> None:
        """Reload the upstream's weights from its checkpoint.

        ESPnet's ``--init`` re-initialises every parameter of the model and then calls this on the
        frontend, so the SSL weights survive it.
        """
        fresh = SSLUpstream(self.spec, frozen=self.freeze_upstream)
        self.upstream.load_state_dict(fresh.state_dict())
        logger.info("SSLFrontend: reloaded upstream weights from %s", self.spec.path or self.spec.name)

    def extra_repr(self) -> str:
        return (
            f"upstream={self.spec.name!r}, freeze_upstream={self.freeze_upstream}, "
            f"layer_selection={self.layer_selection!r}, layers={self.layers}, normalize_layers={self.normalize_layers}"
        )

    @property
    def _device(self) -> torch.device:
        return next(self.upstream.parameters()).device


def _check_selection(selection: str | int, layers: list[int] | None) -> None:
    """Reject a ``layer_selection`` / ``layers`` combination that no upstream could satisfy."""
    if isinstance(selection, bool) or (isinstance(selection, str) and selection not in LAYER_SELECTIONS):
        raise ValueError(f"SSLFrontend: layer_selection must be one of {LAYER_SELECTIONS} or an int, got {selection!r}")
    if selection != "weighted" and layers is not None:
        raise ValueError(f"SSLFrontend: layers={layers} only applies to layer_selection 'weighted', got {selection!r}")
    if layers is not None and (not layers or len(set(layers)) != len(layers)):
        raise ValueError(f"SSLFrontend: layers must be distinct hidden-state indices, got {layers}")


def _selected_layers(selection: str | int, layers: list[int] | None, num_states: int) -> list[int]:
    """Hidden-state indices (0 <= i < num_states) that ``selection`` combines (already checked)."""
    if selection == "last":
        return [num_states - 1]
    if isinstance(selection, int):
        if not -num_states <= selection < num_states:
            raise ValueError(
                f"SSLFrontend: layer_selection {selection} is out of range: the upstream has {num_states} hidden states"
            )
        return [selection % num_states]
    if layers is None:
        return list(range(num_states))
    if any(not 0 <= i < num_states for i in layers):
        raise ValueError(
            f"SSLFrontend: layers must be distinct hidden-state indices in [0, {num_states}), got {layers}"
        )
    return list(layers)


# State-dict hooks (plain functions: torch marks hooks registered through its public API with an
# attribute, which a bound method cannot take).
def _drop_frozen_upstream(module: SSLFrontend, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """Leave a frozen upstream's tensors out of the state dict: they are its checkpoint's, unchanged."""
    if module.freeze_upstream:
        for key in [k for k in state_dict if k.startswith(prefix + _UPSTREAM + ".")]:
            del state_dict[key]


def _remember_load_prefix(module: SSLFrontend, state_dict: dict, prefix: str, *args) -> None:
    # the post-hook below only sees full key names; it needs to know where this module sits
    module._load_prefix = prefix


def _forgive_frozen_upstream(module: SSLFrontend, incompatible_keys) -> None:
    """A frozen upstream's tensors are not required when loading: it was built from its checkpoint."""
    if module.freeze_upstream:
        upstream_prefix = getattr(module, "_load_prefix", "") + _UPSTREAM + "."
        incompatible_keys.missing_keys[:] = [
            k for k in incompatible_keys.missing_keys if not k.startswith(upstream_prefix)
        ]
