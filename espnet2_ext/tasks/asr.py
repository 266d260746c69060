"""ESPnet's ASR task with this project's components, built from the task's OWN registries.

:class:`ASRTask` is ESPnet's ``espnet2.tasks.asr.ASRTask`` plus ``frontend: ssl``
(:class:`~espnet2_ext.frontend.SSLFrontend`). Everything else (data loading, preprocessing,
training loop, config.yaml) is ESPnet's.

Why not just append to ``class_choices_list``: ESPnet's ``ASRTask.build_model`` looks its classes
up in the module-level registries of ``espnet2.tasks.asr`` (``frontend_choices.get_class``), not
through the task class, so a subclass that only changes ``class_choices_list`` parses
``--frontend ssl`` and then fails to build. Editing ESPnet's registries at import time would change
ESPnet for every other user in the process. Instead this module holds copies of ESPnet's registries
(same classes, plus ours) and :meth:`ASRTask.build_model` is our own implementation of the steps of
ESPnet's ``build_model`` that reads them; the saved ``config.yaml`` therefore only rebuilds through
this task (``python -m espnet2_ext.bin.asr_train`` / ``espnet2_ext.bin.asr_inference``).

The task adds ``--layer_weights_lr_scale`` and ``--upstream_lr_scale``
(:class:`~espnet2_ext.tasks.lr_groups.LRGroups`): separate learning rates for the SSL frontend's
layer-weight logits (step 1) and for the SSL model being fine-tuned (step 0).

Loading is strict: ESPnet's ``build_model_from_file`` loads with ``strict=False``, which silently
keeps random weights for anything the file lacks; ours raises instead. The only tensors a checkpoint
may lack are a frozen SSL upstream's, which :class:`SSLFrontend` never saves.

Example:
    >>> model, args = ASRTask.build_model_from_file("exp/asr/config.yaml", "exp/asr/valid.acc.ave.pth")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging

from espnet2.asr.ctc import CTC
from espnet2.tasks import asr as espnet_asr
from espnet2.torch_utils.initialize import initialize
from espnet2.train.abs_espnet_model import AbsESPnetModel
from typeguard import typechecked

from espnet2_ext.frontend import SSLFrontend
from espnet2_ext.tasks.common import (
    CheckedResumeMixin,
    StrictLoadingMixin,
    build_choice,
    extend_choices,
    load_state_dict_checked,  # noqa: F401  (part of this module's interface)
    read_token_list,
)
from espnet2_ext.tasks.cpu_amp import CPUAmp
from espnet2_ext.tasks.lr_groups import LRGroups

logger = logging.getLogger(__name__)


frontend_choices = extend_choices(espnet_asr.frontend_choices, ssl=SSLFrontend)
specaug_choices = extend_choices(espnet_asr.specaug_choices)
normalize_choices = extend_choices(espnet_asr.normalize_choices)
model_choices = extend_choices(espnet_asr.model_choices)
preencoder_choices = extend_choices(espnet_asr.preencoder_choices)
encoder_choices = extend_choices(espnet_asr.encoder_choices)
postencoder_choices = extend_choices(espnet_asr.postencoder_choices)
decoder_choices = extend_choices(espnet_asr.decoder_choices)
# Not copied: ESPnet's build_preprocess_fn (inherited unchanged) reads this very object, so a copy
# would be a second list that nothing uses.
preprocessor_choices = espnet_asr.preprocessor_choices


class ASRTask(CPUAmp, LRGroups, StrictLoadingMixin, CheckedResumeMixin, espnet_asr.ASRTask):
    """ESPnet ASR with the SSL frontend; see the module docstring."""

    class_choices_list = [
        frontend_choices,
        specaug_choices,
        normalize_choices,
        model_choices,
        preencoder_choices,
        encoder_choices,
        postencoder_choices,
        decoder_choices,
        preprocessor_choices,
    ]

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        """Build the model described by ``args`` (parsed options or a loaded config.yaml).

        Mirrors ESPnet's ``ASRTask.build_model`` step by step, reading this module's registries:
        frontend, specaug, normalize, preencoder, encoder, postencoder, decoder, CTC, model, init.
        Like ESPnet's, it replaces a ``token_list`` path in ``args`` by the list itself (so
        config.yaml is self-contained) and clears ``frontend`` when ``input_size`` is given.
        Transducer decoders and multi-blank transducer losses are not supported (use ESPnet's
        task for those).

        Raises:
            ValueError: an unsupported option or an unknown class name.
        """
        token_list = read_token_list(args.token_list)
        args.token_list = token_list
        vocab_size = len(token_list)
        logger.info("Vocabulary size: %d", vocab_size)
        model_conf = dict(getattr(args, "model_conf", None) or {})
        if model_conf.get("transducer_multi_blank_durations"):
            raise ValueError("model_conf.transducer_multi_blank_durations is not supported by espnet2_ext's ASRTask")
        if getattr(args, "decoder", None) == "transducer":
            raise ValueError("decoder 'transducer' is not supported by espnet2_ext's ASRTask; use ESPnet's asr task")

        # 1. frontend (or features straight from the data loader)
        if args.input_size is None:
            frontend = build_choice(frontend_choices, args, "frontend")
            if frontend is None:
                raise ValueError("frontend none needs input_size (features from the data loader)")
            input_size = frontend.output_size()
        else:
            args.frontend, args.frontend_conf = None, {}
            frontend, input_size = None, args.input_size
        # 2. augmentation, 3. normalisation
        specaug = build_choice(specaug_choices, args, "specaug")
        normalize = build_choice(normalize_choices, args, "normalize")
        # 4. pre-encoder, encoder, post-encoder
        preencoder = build_choice(preencoder_choices, args, "preencoder")
        if preencoder is not None:
            input_size = preencoder.output_size()
        encoder = build_choice(encoder_choices, args, "encoder", input_size=input_size)
        encoder_output_size = input_size if encoder is None else encoder.output_size()
        postencoder = build_choice(postencoder_choices, args, "postencoder", input_size=encoder_output_size)
        if postencoder is not None:
            encoder_output_size = postencoder.output_size()
        # 5. decoder, 6. CTC
        decoder = build_choice(
            decoder_choices, args, "decoder", vocab_size=vocab_size, encoder_output_size=encoder_output_size
        )
        ctc = CTC(odim=vocab_size, encoder_output_size=encoder_output_size, **(getattr(args, "ctc_conf", None) or {}))
        # 7. model
        model_class = model_choices.get_class(getattr(args, "model", None) or "espnet")
        model = model_class(
            vocab_size=vocab_size,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=decoder,
            ctc=ctc,
            joint_network=None,
            token_list=token_list,
            **model_conf,
        )
        # 8. initialisation (SSLFrontend.reload_pretrained_parameters restores the SSL weights)
        if getattr(args, "init", None) is not None:
            initialize(model, args.init)
        return cls.with_cpu_amp(model, args)
