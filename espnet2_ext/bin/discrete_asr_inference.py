"""Decode units with a model trained by :mod:`espnet2_ext.bin.discrete_asr_train` (beam search, CTC weight).

ESPnet's ``espnet2.bin.mt_inference`` (``Text2Text``, ``inference``) rebuilds the model through
ESPnet's ``MTTask``, a module-level name; :func:`espnet_inference_with_our_task` points that name
at :class:`~espnet2_ext.tasks.discrete_asr.DiscreteASRTask` for as long as a model is built or a
decoding run lasts (our registries, strict loading) and puts ESPnet's back afterwards. The options,
beam search and output files (``<output_dir>/1best_recog/{text,token,token_int,score}``) are ESPnet's.

With ``beam_size 1`` and ``ctc_weight 1.0`` the model's CTC branch decodes by its best path
(argmax per frame, repeats merged, blanks dropped): ESPnet's MT decoding has no greedy CTC, and
its label-synchronous search with a CTC prefix scorer took ~3.5 s per utterance on 2 CPU cores,
which the demo's five systems x 940 test utterances cannot afford (conf/decode/step2_demo.yaml).

One job decodes its shard of every set (``--sets``, ``--shard``, ``--nshard``: ESPnet is imported
once per job, not once per set; :mod:`espnet2_ext.bin.sharded_decoding`)::

    python -m espnet2_ext.bin.discrete_asr_inference --ngpu 0 --config conf/decode/step2_demo.yaml \\
        --data_path_and_name_and_type 'dump/units/twostep/{set}/text,src_text,text' --sets test_1h dev_clean \\
        --mt_train_config exp/step2_twostep/config.yaml --mt_model_file exp/step2_twostep/valid.acc.ave.pth \\
        --output_dir 'exp/step2_twostep/decode/{set}/output.1' --shard 1 --nshard 4

In Python::

    >>> from espnet2_ext.bin.discrete_asr_inference import Text2Text            # doctest: +SKIP
    >>> text2text = Text2Text("exp/step2_twostep/config.yaml", "exp/step2_twostep/valid.acc.ave.pth")  # doctest: +SKIP
    >>> text, tokens, token_ids, hyp = text2text(src_token_ids)[0]             # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Iterator, Sequence
from unittest import mock

import torch
from espnet.nets.beam_search import Hypothesis
from espnet2.bin import mt_inference as espnet_inference

from espnet2_ext.bin import sharded_decoding
from espnet2_ext.tasks.discrete_asr import DiscreteASRTask


def espnet_inference_with_our_task() -> contextlib.AbstractContextManager:
    """Context manager: within it ESPnet's ``mt_inference`` (Text2Text, inference) uses our task."""
    return mock.patch.object(espnet_inference, "MTTask", DiscreteASRTask)


@contextlib.contextmanager
def espnet_inference_with_our_text2text() -> Iterator[None]:
    """Context manager: within it ESPnet's ``inference()`` builds our :class:`Text2Text` (best-path CTC)."""
    with mock.patch.object(espnet_inference, "Text2Text", Text2Text):
        yield


class Text2Text(espnet_inference.Text2Text):
    """ESPnet's ``Text2Text`` whose model is rebuilt (and strictly loaded) by :class:`DiscreteASRTask`.

    Takes exactly ESPnet's arguments (``mt_train_config``, ``mt_model_file``, ``beam_size``,
    ``ctc_weight``, ``maxlenratio``, ...); calling it with the source token ids of one utterance
    (shape ``(L,)``) returns the n-best ``(text, tokens, token_ids, hypothesis)``. With ``beam_size``
    1 and ``ctc_weight`` 1.0 the search is the best CTC path (module docstring).
    """

    def __init__(self, *args, **kwargs) -> None:
        with espnet_inference_with_our_task():
            super().__init__(*args, **kwargs)
        if kwargs.get("beam_size", 20) == 1 and kwargs.get("ctc_weight", 0.0) == 1.0:
            if getattr(self.mt_model, "ctc", None) is None:
                raise ValueError("ctc_weight 1.0 needs a model with a CTC branch (model_conf.ctc_weight > 0)")
            self.beam_search = self.best_ctc_path

    def best_ctc_path(self, x: torch.Tensor, maxlenratio: float = 0.0, minlenratio: float = 0.0) -> list[Hypothesis]:
        """The best CTC path of encoder output ``x`` (T, D) as ESPnet's one-best hypothesis list.

        The hypothesis carries ``sos + labels + eos`` as ESPnet's do; its score is not computed (0).
        """
        best = self.mt_model.ctc.argmax(x.unsqueeze(0))[0].tolist()
        labels = [i for i, _ in itertools.groupby(best) if i != self.mt_model.blank_id]
        yseq = torch.tensor([self.mt_model.sos, *labels, self.mt_model.eos])
        return [Hypothesis(yseq=yseq, score=0.0)]


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's MT decoding parser plus ``--sets``, ``--shard`` and ``--nshard``."""
    parser = espnet_inference.get_parser()
    sharded_decoding.add_options(parser)
    return parser


def inference(**kwargs) -> None:
    """ESPnet's ``mt_inference.inference`` with our task and :class:`Text2Text`."""
    with espnet_inference_with_our_task(), espnet_inference_with_our_text2text():
        espnet_inference.inference(**kwargs)


def main(cmd: Sequence[str] | None = None) -> None:
    """Decode each of ``--sets`` (shard ``--shard``) with ESPnet's ``mt_inference``; ``cmd`` defaults to ``sys.argv``."""
    sharded_decoding.decode_sets(vars(get_parser().parse_args(cmd)), inference)


if __name__ == "__main__":
    main()
