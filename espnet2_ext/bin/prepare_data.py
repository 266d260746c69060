"""Data preparation CLI: corpora -> Kaldi data dirs for the challenge sets.

Subcommands (each idempotent; outputs written atomically)::

    python -m espnet2_ext.bin.prepare_data mlsuperb --root R --setup 1h --out_dir data/local/mlsuperb [--lid]
    python -m espnet2_ext.bin.prepare_data librispeech --root R --out_dir data/local/librispeech [--lid]
    python -m espnet2_ext.bin.prepare_data combine --out_dir data/train SRC_DIR [SRC_DIR ...]
    python -m espnet2_ext.bin.prepare_data measure --data_dir D --shard J --nshard N [--fs 16000]
    python -m espnet2_ext.bin.prepare_data finalize --data_dir D --nshard N [--max_seconds 20] [--fs 16000]
    python -m espnet2_ext.bin.prepare_data subset --table data/dev/wav.scp --max_utts 320 --out OUT

Challenge sets built from them by the recipe:

* ``train``     = ML-SUPERB ``train`` of the setup + LibriSpeech ``train_clean_100``;
* ``dev``       = ML-SUPERB ``dev`` (10-minute dev files) + LibriSpeech ``dev_clean``. Only
  dev-clean goes into the validation set: it keeps validation cheap and leaves ``dev_other``
  as an untouched evaluation set (ESPnet's challenge recipe validates on dev-clean + dev-other);
* ``test_1h``   = ML-SUPERB ``test`` of the ``1h`` setup;
* ``dev_clean``, ``dev_other``, ``test_clean``, ``test_other`` = the LibriSpeech sets.

``mlsuperb``/``librispeech`` read no audio. ``measure`` (one job per shard) decodes every file
of its shard and checks it; ``finalize`` merges the shards into ``utt2num_samples``, drops
utterances longer than ``--max_seconds`` when given (train only: evaluation sets are refused),
writes ``spk2utt`` and finally ``.done``. A dir without ``.done`` is not complete.
``subset`` writes the lines of one per-utterance table (``wav.scp``, ``text``, a unit dump, a
shape file) for ``--max_utts`` ids spread evenly over its sorted ids, in the table's order: the
recipe hands such a table to ESPnet as the key list of its validation set (``valid_max_utts``).

Errors in the data print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from espnet2_ext.data.datadir import (
    DataDir,
    finalize_datadir,
    is_complete,
    mark_complete,
    measure_shard,
    select_utterances,
)
from espnet2_ext.data.librispeech import CHALLENGE_SETS
from espnet2_ext.data.mlsuperb import FEW_SHOT_UTTS, RESERVED_LANGS, SETUPS
from espnet2_ext.utils.fileio import DataError, read_kaldi_text, write_kaldi_text

logger = logging.getLogger("prepare_data")


def _comma_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _write_all(dirs: dict[str, DataDir], out_dir: Path) -> None:
    for name, dd in dirs.items():
        dd.write(out_dir / name)
        mark_complete(out_dir / name)


def cmd_mlsuperb(args: argparse.Namespace) -> None:
    from espnet2_ext.data.mlsuperb import prepare_mlsuperb

    dirs = prepare_mlsuperb(
        args.root,
        setup=args.setup,
        lid=args.lid,
        reserved_langs=_comma_list(args.reserved_langs),
        max_bad_fraction=args.max_bad_fraction,
        few_shot_utts=args.few_shot_utts,
    )
    _write_all(dirs, Path(args.out_dir))


def cmd_librispeech(args: argparse.Namespace) -> None:
    from espnet2_ext.data.librispeech import prepare_librispeech

    _write_all(prepare_librispeech(args.root, sets=_comma_list(args.sets), lid=args.lid), Path(args.out_dir))


def cmd_combine(args: argparse.Namespace) -> None:
    sources = []
    for src in args.src_dirs:
        sources.append(DataDir.load(src))
        if not is_complete(src):
            logger.warning("%s: no .done marker; the source may be incomplete", src)
    out = Path(args.out_dir)
    if any(Path(s).resolve() == out.resolve() for s in args.src_dirs) and len(args.src_dirs) > 1:
        raise DataError(f"{out}: the output dir is also a source; write the combination to a new dir")
    DataDir.combine(sources, name=str(out)).write(out)


def cmd_measure(args: argparse.Namespace) -> None:
    measure_shard(args.data_dir, args.shard, args.nshard, fs=args.fs)


def cmd_finalize(args: argparse.Namespace) -> None:
    finalize_datadir(args.data_dir, args.nshard, fs=args.fs, max_seconds=args.max_seconds)


def cmd_subset(args: argparse.Namespace) -> None:
    table = read_kaldi_text(args.table, allow_empty_value=True)
    if not table:
        raise DataError(f"{args.table}: no utterances; rerun the stage that writes it")
    # in the table's own order: ESPnet's streaming reader (collect_stats) finds the keys of its key
    # file in the data files by reading them forward, so the two orders must agree
    keep = set(select_utterances(list(table), args.max_utts))
    write_kaldi_text(args.out, [(u, v) for u, v in table.items() if u in keep])
    logger.info("%s: %d of %d utterances -> %s", args.table, len(keep), len(table), args.out)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2_ext.bin.prepare_data",
        description="Prepare Kaldi-style data dirs for ML-SUPERB + LibriSpeech (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("mlsuperb", help="ML-SUPERB -> OUT_DIR/{train,dev,test}", formatter_class=fmt)
    p.add_argument("--root", required=True, help="ML-SUPERB root holding <dataset>/<iso3>/ folders")
    p.add_argument("--setup", required=True, choices=SETUPS, help="training transcript: transcript_<setup>_train.txt")
    p.add_argument("--out_dir", required=True, help="where the train, dev and test dirs are written")
    p.add_argument("--lid", action="store_true", help="prefix every transcript with its language tag, '[iso3] TEXT'")
    p.add_argument(
        "--reserved_langs",
        default=",".join(RESERVED_LANGS),
        help="comma-separated few-shot languages (ISO 639-3) trimmed in train; '' for none",
    )
    p.add_argument(
        "--few_shot_utts", type=int, default=FEW_SHOT_UTTS, help="training utterances kept per reserved language"
    )
    p.add_argument(
        "--max_bad_fraction",
        type=float,
        default=0.01,
        help="fail when more than this fraction of transcript lines has fewer than 3 fields",
    )
    p.set_defaults(func=cmd_mlsuperb)

    p = sub.add_parser("librispeech", help="LibriSpeech sets -> OUT_DIR/<challenge set name>", formatter_class=fmt)
    p.add_argument("--root", required=True, help="LibriSpeech root holding the set folders (e.g. .../LibriSpeech)")
    p.add_argument("--out_dir", required=True, help="one dir per set is written here (dev-clean -> dev_clean, ...)")
    p.add_argument("--sets", default=",".join(CHALLENGE_SETS), help="comma-separated LibriSpeech set names")
    p.add_argument("--lid", action="store_true", help="prefix every transcript with '[eng] '")
    p.set_defaults(func=cmd_librispeech)

    p = sub.add_parser(
        "combine", help="merge data dirs (one source = copy); duplicate ids are an error", formatter_class=fmt
    )
    p.add_argument("--out_dir", required=True, help="the merged data dir (rewritten; its .done is removed)")
    p.add_argument("src_dirs", nargs="+", metavar="SRC_DIR", help="source data dirs")
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser(
        "measure", help="decode and check the audio of one shard; write .measure/utt2num_samples.J", formatter_class=fmt
    )
    p.add_argument("--data_dir", required=True, help="the data dir to measure")
    p.add_argument("--shard", type=int, required=True, help="shard J, 1-based (sorted index i with i %% N == J-1)")
    p.add_argument("--nshard", type=int, required=True, help="number of shards N")
    p.add_argument("--fs", type=int, default=16000, help="required sample rate in Hz")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser(
        "finalize",
        help="merge shards into utt2num_samples, optionally filter, write spk2utt and .done",
        formatter_class=fmt,
    )
    p.add_argument("--data_dir", required=True, help="the measured data dir")
    p.add_argument("--nshard", type=int, required=True, help="number of shards measure was run with")
    p.add_argument(
        "--max_seconds",
        type=float,
        default=None,
        help="drop utterances longer than this (train only; refused for evaluation sets); None keeps all",
    )
    p.add_argument("--fs", type=int, default=16000, help="sample rate in Hz")
    p.set_defaults(func=cmd_finalize)

    p = sub.add_parser(
        "subset", help="the lines of a per-utterance table for MAX_UTTS ids spread evenly over it", formatter_class=fmt
    )
    p.add_argument("--table", required=True, help="a 'utt value' file (wav.scp, text, a unit dump, ...)")
    p.add_argument("--max_utts", type=int, required=True, help="ids kept, spread over the sorted ids (0 = all)")
    p.add_argument("--out", required=True, help="the subset table (written atomically)")
    p.set_defaults(func=cmd_subset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 on a data error, after one line on stderr)."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    try:
        args.func(args)
    except DataError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
