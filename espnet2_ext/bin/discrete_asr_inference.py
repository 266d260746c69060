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

Options added for the project's job runner (one process decodes its shard of every set, so ESPnet
is imported once per job, not once per set):

* ``--sets A B ...``: ``{set}`` in ``--data_path_and_name_and_type`` and ``--output_dir`` is
  replaced by each set in turn;
* ``--shard J --nshard N``: decode shard ``J`` of ``N`` of the first input file's utterances
  (sorted index ``i`` with ``i % N == J - 1``, as :func:`espnet2_ext.data.datadir.shard_ids`); the
  shard's keys are written to ``<output_dir>/keys.scp``::

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
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from unittest import mock

import torch
from espnet.nets.beam_search import Hypothesis
from espnet2.bin import mt_inference as espnet_inference

from espnet2_ext.data.datadir import shard_ids
from espnet2_ext.tasks.discrete_asr import DiscreteASRTask
from espnet2_ext.utils.fileio import read_kaldi_text, write_kaldi_text

logger = logging.getLogger("discrete_asr_inference")

KEYS_FILE = "keys.scp"


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
    group = parser.add_argument_group("Several sets, sharding (espnet2_ext)")
    group.add_argument(
        "--sets",
        nargs="+",
        default=None,
        help="decode each set in turn: {set} in --data_path_and_name_and_type and --output_dir",
    )
    group.add_argument("--shard", type=int, default=None, help="decode shard J (1-based) of --nshard")
    group.add_argument("--nshard", type=int, default=None, help="number of shards (with --shard)")
    return parser


def write_shard_keys(source_file: str | Path, key_file: str | Path | None, shard: int, nshard: int, out: Path) -> int:
    """Write the keys of shard ``shard`` of ``nshard`` of ``source_file``'s utterances to ``out``.

    Args:
        source_file: the first input file (``utt value`` lines), e.g. a set's unit text.
        key_file: restrict to these utterances first (None: all).
        shard, nshard: 1-based shard index and number of shards.
        out: the key file written (``utt value`` lines, ESPnet's ``--key_file``).

    Returns:
        The number of keys (0 when there are more shards than utterances).
    """
    source = read_kaldi_text(source_file, allow_empty_value=True)
    ids = list(source)
    if key_file:
        wanted = set(read_kaldi_text(key_file, allow_empty_value=True))
        ids = [u for u in ids if u in wanted]
    # ESPnet's streaming loader reads the key file and the data file side by side: keep the file's order.
    in_shard = set(shard_ids(ids, shard, nshard))
    keys = [u for u in ids if u in in_shard]
    write_kaldi_text(out, [(u, source[u]) for u in keys])
    logger.info("shard %d/%d: %d of %d utterances -> %s", shard, nshard, len(keys), len(ids), out)
    return len(keys)


def main(cmd: Sequence[str] | None = None) -> None:
    """Run ESPnet's ``mt_inference`` with our task, for each of ``--sets`` and one ``--shard``.

    ``cmd`` defaults to ``sys.argv``.
    """
    kwargs = vars(get_parser().parse_args(cmd))
    kwargs.pop("config", None)
    sets, shard, nshard = kwargs.pop("sets"), kwargs.pop("shard"), kwargs.pop("nshard")
    if (shard is None) != (nshard is None):
        raise SystemExit("discrete_asr_inference: give both --shard and --nshard, or neither")
    logging.basicConfig(
        level=kwargs["log_level"], format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
    )
    data, output_dir = kwargs["data_path_and_name_and_type"], kwargs["output_dir"]
    for set_name in sets or [None]:
        job = dict(kwargs)
        if set_name is not None:
            job["data_path_and_name_and_type"] = [(p.replace("{set}", set_name), n, t) for p, n, t in data]
            job["output_dir"] = output_dir.replace("{set}", set_name)
        if shard is not None:
            keys = Path(job["output_dir"]) / KEYS_FILE
            if not write_shard_keys(job["data_path_and_name_and_type"][0][0], job["key_file"], shard, nshard, keys):
                logger.warning("%s: shard %d/%d is empty: nothing to decode", set_name, shard, nshard)
                continue
            job["key_file"] = str(keys)
        with espnet_inference_with_our_task(), espnet_inference_with_our_text2text():
            espnet_inference.inference(**job)


if __name__ == "__main__":
    main()
