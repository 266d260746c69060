"""Decoding jobs that cover several sets and one shard each, and the merge of their hypotheses.

ESPnet's decoding CLIs (``asr_inference``, ``mt_inference``) decode one data set per process, and
importing ESPnet takes ~11 s per process on the project's 2 CPU cores (typeguard instruments its
functions at import), more than decoding a demo set by the best CTC path. So the project's decoding
CLIs (:mod:`espnet2_ext.bin.asr_inference` for step 1, :mod:`espnet2_ext.bin.discrete_asr_inference`
for step 2) take three more options, and one job decodes its shard of every set:

* ``--sets A B ...``: ``{set}`` in ``--data_path_and_name_and_type`` and ``--output_dir`` is
  replaced by each set in turn;
* ``--shard J --nshard N``: decode shard ``J`` of ``N`` of the first input file's utterances
  (sorted index ``i`` with ``i % N == J - 1``, as :func:`espnet2_ext.data.datadir.shard_ids`); the
  shard's keys are written to ``<output_dir>/keys.scp`` and passed to ESPnet as ``--key_file``.

Then one hypothesis file per set (every utterance of the input must have exactly one)::

    python -m espnet2_ext.bin.sharded_decoding merge --decode_dir exp/step2_twostep/decode \\
        --sets test_1h dev_clean --src_pattern 'dump/units/twostep/{set}/text'
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from espnet2_ext.data.datadir import shard_ids
from espnet2_ext.utils.fileio import DataError, listing, read_kaldi_text, write_kaldi_text

logger = logging.getLogger("sharded_decoding")

KEYS_FILE = "keys.scp"
HYP_GLOB = "output.*/1best_recog/text"


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--sets``, ``--shard`` and ``--nshard`` to an ESPnet decoding parser."""
    group = parser.add_argument_group("Several sets, sharding (espnet2_ext)")
    group.add_argument(
        "--sets",
        nargs="+",
        default=None,
        help="decode each set in turn: {set} in --data_path_and_name_and_type and --output_dir",
    )
    group.add_argument("--shard", type=int, default=None, help="decode shard J (1-based) of --nshard")
    group.add_argument("--nshard", type=int, default=None, help="number of shards (with --shard)")


def write_shard_keys(source_file: str | Path, key_file: str | Path | None, shard: int, nshard: int, out: Path) -> int:
    """Write the keys of shard ``shard`` of ``nshard`` of ``source_file``'s utterances to ``out``.

    Args:
        source_file: the first input file (``utt value`` lines), e.g. a set's wav.scp or unit text.
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


def decode_sets(kwargs: dict, decode: Callable[..., None]) -> None:
    """Call ``decode(**job)`` for each of ``kwargs["sets"]`` on shard ``kwargs["shard"]``.

    Args:
        kwargs: the parsed options of an ESPnet decoding CLI plus :func:`add_options`' (``sets``,
            ``shard`` and ``nshard`` are taken out; ``config`` is dropped as ESPnet's ``main`` does).
        decode: ESPnet's ``inference`` (or a wrapper of it); each call gets the options of one set,
            with ``key_file`` the shard's keys. A set whose shard is empty is skipped.
    """
    kwargs = dict(kwargs)
    kwargs.pop("config", None)
    sets, shard, nshard = kwargs.pop("sets"), kwargs.pop("shard"), kwargs.pop("nshard")
    if (shard is None) != (nshard is None):
        raise SystemExit("give both --shard and --nshard, or neither")
    if shard is not None and not 1 <= shard <= nshard:
        raise SystemExit(f"--shard {shard} is not in 1..--nshard {nshard}")
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
        decode(**job)


# ------------------------------------------------------------------ merge
def merge_hypotheses(set_dir: Path, expected: list[str]) -> dict[str, str]:
    """Hypotheses of every decoding shard under ``set_dir`` (``output.J/1best_recog/text``), by utterance.

    Raises:
        DataError: an utterance decoded twice, or one of ``expected`` without a hypothesis
            (its shard failed: see the decoding logs).
    """
    hyps: dict[str, str] = {}
    for path in sorted(set_dir.glob(HYP_GLOB)):
        for utt, text in read_kaldi_text(path, allow_empty_value=True).items():
            if utt in hyps:
                raise DataError(f"{path}: '{utt}' was decoded by two shards; remove {set_dir} and decode again")
            hyps[utt] = text
    missing = [u for u in expected if u not in hyps]
    if missing:
        raise DataError(
            f"{set_dir}: {len(missing)} of {len(expected)} utterances have no hypothesis ({listing(missing, 5)}); "
            f"a decoding job failed or was cut short: see its log, remove {set_dir} and decode again"
        )
    return {u: hyps[u] for u in sorted(expected)}


def cmd_merge(args: argparse.Namespace) -> int:
    for set_name in args.sets:
        expected = list(read_kaldi_text(args.src_pattern.replace("{set}", set_name), allow_empty_value=True))
        hyps = merge_hypotheses(args.decode_dir / set_name, expected)
        write_kaldi_text(args.decode_dir / set_name / "text", hyps.items())
        logger.info("%s: %d hypotheses -> %s", set_name, len(hyps), args.decode_dir / set_name / "text")
    return 0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet2_ext.bin.sharded_decoding", description=__doc__.split("\n")[0])
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="<decode_dir>/<set>/text from the decoding shards")
    m.add_argument("--decode_dir", type=Path, required=True, help="holds <set>/output.J/1best_recog/text")
    m.add_argument("--sets", nargs="+", required=True)
    m.add_argument("--src_pattern", required=True, help="the decoded input with {set}: the utterances expected")
    m.set_defaults(func=cmd_merge)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except DataError as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
