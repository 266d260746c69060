"""Decode with an ASR model trained by :mod:`espnet2_ext.bin.asr_train` (e.g. with ``frontend: ssl``).

ESPnet's ``espnet2.bin.asr_inference`` hard-wires ESPnet's ``ASRTask`` (a module-level name) to
rebuild the model from config.yaml, and that task cannot build our frontend. Its ``Speech2Text``
takes no task argument, so :func:`espnet_inference_with_our_task` points that one name at our task
(a subclass, identical except for the extra registry entries and the strict loading) for as long as
a model is being built or a decoding run lasts, and puts ESPnet's back afterwards. Everything else
(options, beam search, output files) is ESPnet's::

    python -m espnet2_ext.bin.asr_inference --ngpu 0 --beam_size 5 --ctc_weight 1.0 \\
        --data_path_and_name_and_type dump/raw/test_1h/wav.scp,speech,sound \\
        --asr_train_config exp/asr_step1/config.yaml --asr_model_file exp/asr_step1/valid.loss.best.pth \\
        --output_dir exp/asr_step1/decode_test_1h

One job decodes its shard of every set (``--sets``, ``--shard``, ``--nshard``: ESPnet is imported
once per job, not once per set; :mod:`espnet2_ext.bin.sharded_decoding`)::

    python -m espnet2_ext.bin.asr_inference --ngpu 0 --config conf/decode/step1_demo.yaml \\
        --data_path_and_name_and_type 'data/{set}/wav.scp,speech,sound' --sets test_1h dev_clean \\
        --asr_train_config exp/step1_step0/config.yaml --asr_model_file exp/step1_step0/valid.loss.ave.pth \\
        --output_dir 'exp/step1_step0/decode/{set}/output.1' --shard 1 --nshard 2

Decoding a CTC-only model with ``beam_size 1`` and ``ctc_weight 1.0`` takes the best path (argmax
per frame, repeats merged, blanks dropped) instead of ESPnet's label-synchronous prefix search:
ESPnet offers no greedy CTC decoding for ASR models, and its CTC prefix scorer loops over every
frame for every output label, ~100x slower on CPU (seconds per utterance for the demo models).

In Python::

    >>> from espnet2_ext.bin.asr_inference import Speech2Text                  # doctest: +SKIP
    >>> speech2text = Speech2Text("exp/asr_step1/config.yaml", "exp/asr_step1/valid.loss.best.pth")  # doctest: +SKIP
    >>> text, tokens, token_ids, hyp = speech2text(wav)[0]                    # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Iterator, Sequence

import torch
from espnet.nets.beam_search import Hypothesis
from espnet2.bin import asr_inference as espnet_inference

from espnet2_ext.bin import sharded_decoding
from espnet2_ext.tasks.asr import ASRTask


@contextlib.contextmanager
def espnet_inference_with_our_task() -> Iterator[None]:
    """Within this context ESPnet's ``asr_inference`` (Speech2Text, inference) uses our ASRTask."""
    original = espnet_inference.ASRTask
    espnet_inference.ASRTask = ASRTask
    try:
        yield
    finally:
        espnet_inference.ASRTask = original


@contextlib.contextmanager
def espnet_inference_with_our_speech2text() -> Iterator[None]:
    """Within this context ESPnet's ``inference()`` builds our :class:`Speech2Text` (best-path CTC)."""
    original = espnet_inference.Speech2Text
    espnet_inference.Speech2Text = Speech2Text
    try:
        yield
    finally:
        espnet_inference.Speech2Text = original


class Speech2Text(espnet_inference.Speech2Text):
    """ESPnet's ``Speech2Text`` whose model is rebuilt (and strictly loaded) by our ASRTask.

    Takes exactly ESPnet's arguments (``asr_train_config``, ``asr_model_file``, ``beam_size``,
    ``ctc_weight``, ...). With ``beam_size`` 1 and ``ctc_weight`` 1.0 (CTC only) it decodes the
    best CTC path; see the module docstring.
    """

    def __init__(self, *args, **kwargs) -> None:
        with espnet_inference_with_our_task():
            super().__init__(*args, **kwargs)
        self.best_path = (
            kwargs.get("beam_size", 20) == 1
            and kwargs.get("ctc_weight", 0.5) == 1.0
            and getattr(self.asr_model, "ctc", None) is not None
            and not self.asr_model.use_transducer_decoder
        )

    def _decode_single_sample(self, enc: torch.Tensor) -> list:
        """ESPnet's search, or the best CTC path. ``enc``: (T, D) encoder output of one utterance."""
        if not self.best_path:
            return super()._decode_single_sample(enc)
        best = self.asr_model.ctc.argmax(enc.unsqueeze(0))[0].tolist()
        blank = self.asr_model.blank_id
        token_int = [i for i, _ in itertools.groupby(best) if i != blank]
        token = self.converter.ids2tokens(token_int)
        text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
        # sos + labels + eos, as ESPnet's hypotheses carry them; the score is not computed
        yseq = torch.tensor([self.asr_model.sos, *token_int, self.asr_model.eos])
        return [(text, token, token_int, Hypothesis(yseq=yseq, score=0.0))]


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's ASR decoding parser (the options do not depend on the task) plus ``--sets``, ``--shard``, ``--nshard``."""
    parser = espnet_inference.get_parser()
    sharded_decoding.add_options(parser)
    return parser


def inference(**kwargs) -> None:
    """ESPnet's ``asr_inference.inference`` with our task and :class:`Speech2Text`."""
    with espnet_inference_with_our_task(), espnet_inference_with_our_speech2text():
        espnet_inference.inference(**kwargs)


def main(cmd: Sequence[str] | None = None) -> None:
    """Decode each of ``--sets`` (shard ``--shard``) with ESPnet's ``asr_inference``; ``cmd`` defaults to ``sys.argv``."""
    sharded_decoding.decode_sets(vars(get_parser().parse_args(cmd)), inference)


if __name__ == "__main__":
    main()
