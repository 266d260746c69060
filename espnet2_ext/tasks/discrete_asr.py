"""Discrete-unit ASR (step 2): ESPnet's MT task with ``model: discrete_asr``, built from OUR registries.

ESPnet has no separate discrete-ASR task: its asr2 recipes train ``espnet2.tasks.mt.MTTask`` with
``model: discrete_asr`` (:class:`espnet2.asr.discrete_asr_espnet_model.ESPnetDiscreteASRModel`: unit
embedding, encoder, CTC + attention decoder, SpecAug on the embedded units). The units enter as
source "text" (``src_text``: one CJK character per deduplicated unit, then source BPE) and the
transcript as target ``text``.

:class:`DiscreteASRTask` is that task with the same two changes as :mod:`espnet2_ext.tasks.asr`
(read its docstring for the reasons):

* :meth:`DiscreteASRTask.build_model` reads this module's copies of ESPnet's MT registries (the
  same classes; ours can be added here without touching ESPnet's module-level registries, which
  ``MTTask.build_model`` reads directly), and defaults to ``model: discrete_asr``;
* :meth:`DiscreteASRTask.build_model_from_file` loads strictly: a checkpoint that lacks a tensor of
  the model (or has one too many) is an error, not random weights.

and one of its own: :meth:`DiscreteASRTask.build_preprocess_fn` makes BPE-dropout reproducible
(:class:`SeededSampling`), so the same seed trains the same model, also across a resume.

Data loading, preprocessing (source and target tokenisers, BPE-dropout on the source with
``src_tokenizer_encode_conf``), the training loop and config.yaml are ESPnet's.

Example:
    >>> model, args = DiscreteASRTask.build_model_from_file(  # doctest: +SKIP
    ...     "exp/step2_twostep/config.yaml", "exp/step2_twostep/valid.acc.ave.pth")
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
from collections.abc import Iterable

from espnet2.asr.ctc import CTC
from espnet2.tasks import mt as espnet_mt
from espnet2.torch_utils.initialize import initialize
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from typeguard import typechecked

from espnet2_ext.tasks.common import (
    CheckedResumeMixin,
    StrictLoadingMixin,
    build_choice,
    extend_choices,
    read_token_list,
)
from espnet2_ext.tasks.cpu_amp import CPUAmp

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "discrete_asr"

frontend_choices = extend_choices(espnet_mt.frontend_choices)
specaug_choices = extend_choices(espnet_mt.specaug_choices)
preencoder_choices = extend_choices(espnet_mt.preencoder_choices)
encoder_choices = extend_choices(espnet_mt.encoder_choices)
postencoder_choices = extend_choices(espnet_mt.postencoder_choices)
decoder_choices = extend_choices(espnet_mt.decoder_choices)
_mt_models = extend_choices(espnet_mt.model_choices)
# Same classes as ESPnet's MT registry, but this task is for discrete ASR: that is the default model.
model_choices = ClassChoices(
    name=_mt_models.name, classes=_mt_models.classes, type_check=_mt_models.base_type, default=DEFAULT_MODEL
)


class SeededSampling:
    """A sentencepiece tokenizer whose sampled segmentations (BPE-dropout) follow Python's ``random``.

    sentencepiece draws its samples from a per-thread generator seeded once, when the thread first
    samples, from the global seed or, without one, from the OS: ESPnet's seeding never reaches it,
    so two trainings with the same seed (or a training resumed from ``checkpoint.pth``) would see
    other segmentations. Here every utterance is sampled in a new thread whose generator is seeded
    with a draw from ``random``, which ESPnet seeds with ``seed + epoch`` in the trainer and per
    data-loader worker. The cost is one short-lived thread per training utterance.

    Args:
        tokenizer: ESPnet's ``SentencepiecesTokenizer`` with sampling in its ``encode_kwargs``.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"SeededSampling({self.tokenizer!r})"

    def text2tokens(self, line: str) -> list[str]:
        import sentencepiece as spm

        seed = random.getrandbits(31)
        out: list[list[str]] = []

        def sample() -> None:
            spm.set_random_generator_seed(seed)  # read by this new thread's generator on its first sample
            out.append(self.tokenizer.text2tokens(line))

        thread = threading.Thread(target=sample)
        thread.start()
        thread.join()
        if not out:
            raise RuntimeError(f"sentencepiece sampling failed on {line!r}; see the traceback above")
        return out[0]

    def tokens2text(self, tokens: Iterable[str]) -> str:
        return self.tokenizer.tokens2text(tokens)


class DiscreteASRTask(CPUAmp, StrictLoadingMixin, CheckedResumeMixin, espnet_mt.MTTask):
    """ESPnet's MT task building ``discrete_asr`` models from this module's registries."""

    class_choices_list = [
        frontend_choices,
        specaug_choices,
        preencoder_choices,
        encoder_choices,
        postencoder_choices,
        decoder_choices,
        model_choices,
    ]

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        """Build the model described by ``args`` (parsed options or a loaded config.yaml).

        Mirrors ESPnet's ``MTTask.build_model`` step by step, reading this module's registries:
        frontend (unit embedding over the source vocabulary), specaug, preencoder, encoder,
        postencoder, decoder, CTC, model, init. Like ESPnet's, it replaces ``token_list`` and
        ``src_token_list`` paths in ``args`` by the lists (config.yaml is self-contained) and
        clears ``frontend`` when ``input_size`` is given.

        Raises:
            ValueError: an unknown class name, no source vocabulary for the embedding frontend,
                or SpecAug with ``model: mt`` (ESPnet's MT model has no SpecAug).
        """
        token_list = read_token_list(args.token_list)
        args.token_list = token_list
        src_token_list = None
        if getattr(args, "src_token_list", None) is not None:
            src_token_list = read_token_list(args.src_token_list, option="src_token_list")
            args.src_token_list = src_token_list
        vocab_size, src_vocab_size = len(token_list), None if src_token_list is None else len(src_token_list)
        logger.info("Vocabulary size: %d (target), %s (source)", vocab_size, src_vocab_size)
        model_name = getattr(args, "model", None) or DEFAULT_MODEL

        # 1. frontend: unit embedding (or features straight from the data loader)
        if getattr(args, "input_size", None) is None:
            if src_vocab_size is None:
                raise ValueError("the source embedding needs --src_token_list (or --input_size for features)")
            frontend = build_choice(frontend_choices, args, "frontend", input_size=src_vocab_size)
            input_size = frontend.output_size()
        else:
            args.frontend, args.frontend_conf = None, {}
            frontend, input_size = None, args.input_size
        # 2. augmentation of the embedded units
        specaug = build_choice(specaug_choices, args, "specaug")
        if specaug is not None and model_name != "discrete_asr":
            raise ValueError(f"specaug is not used by model '{model_name}'; set specaug: null or model: discrete_asr")
        # 3. pre-encoder, encoder, post-encoder
        preencoder = build_choice(preencoder_choices, args, "preencoder")
        if preencoder is not None:
            input_size = preencoder.output_size()
        encoder = build_choice(encoder_choices, args, "encoder", input_size=input_size)
        encoder_output_size = encoder.output_size()
        postencoder = build_choice(postencoder_choices, args, "postencoder", input_size=encoder_output_size)
        if postencoder is not None:
            encoder_output_size = postencoder.output_size()
        # 4. decoder, 5. CTC (the discrete_asr model drops it when ctc_weight is 0)
        decoder = build_choice(
            decoder_choices, args, "decoder", vocab_size=vocab_size, encoder_output_size=encoder_output_size
        )
        extra = {}
        if model_name == "discrete_asr":
            ctc_conf = getattr(args, "ctc_conf", None) or {}
            extra = {
                "ctc": CTC(odim=vocab_size, encoder_output_size=encoder_output_size, **ctc_conf),
                "specaug": specaug,
            }
        # 6. model
        model = model_choices.get_class(model_name)(
            vocab_size=vocab_size,
            src_vocab_size=src_vocab_size or 0,
            frontend=frontend,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=decoder,
            token_list=token_list,
            src_token_list=src_token_list or [],
            **(getattr(args, "model_conf", None) or {}),
            **extra,
        )
        # 7. initialisation
        if getattr(args, "init", None) is not None:
            initialize(model, args.init)
        return cls.with_cpu_amp(model, args)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool):
        """ESPnet's MT preprocessor, with BPE-dropout (sampling) seeded by ESPnet's seed (:class:`SeededSampling`)."""
        from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

        preprocess = super().build_preprocess_fn(args, train)
        for i, tokenizer in enumerate(getattr(preprocess, "tokenizer", None) or []):
            if isinstance(tokenizer, SentencepiecesTokenizer) and tokenizer.encode_kwargs.get("enable_sampling"):
                preprocess.tokenizer[i] = SeededSampling(tokenizer)
        return preprocess
