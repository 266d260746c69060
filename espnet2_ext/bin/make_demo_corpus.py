"""Build the offline espeak-ng demo corpus in the ML-SUPERB and LibriSpeech layouts.

Three idempotent, resumable steps (the recipe runs ``synth`` as N parallel jobs)::

    python -m espnet2_ext.bin.make_demo_corpus plan --config conf/corpus/demo.yaml --out_dir DIR [--seed N]
    python -m espnet2_ext.bin.make_demo_corpus synth --out_dir DIR --shard J --nshard N   # J = 1..N
    python -m espnet2_ext.bin.make_demo_corpus finalize --out_dir DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from espnet2_ext.data import demo_corpus
from espnet2_ext.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="draw every utterance into DIR/.plan (no-op if the same plan exists)")
    p.add_argument("--config", required=True, help="corpus YAML, e.g. conf/corpus/demo.yaml")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    s = sub.add_parser("synth", help="synthesise one shard of the planned utterances (skips finished files)")
    s.add_argument("--out_dir", required=True)
    s.add_argument("--shard", type=int, required=True, help="1-based shard index J")
    s.add_argument("--nshard", type=int, required=True, help="number of shards N")
    f = sub.add_parser("finalize", help="check all audio, write transcripts, corpus_stats.json and .done")
    f.add_argument("--out_dir", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "plan":
            demo_corpus.make_plan(demo_corpus.load_config(args.config, seed=args.seed), args.out_dir)
        elif args.command == "synth":
            if not 1 <= args.shard <= args.nshard:
                raise DataError(f"--shard must be in 1..--nshard, got {args.shard} of {args.nshard}")
            demo_corpus.synth_shard(args.out_dir, args.shard, args.nshard)
        else:
            demo_corpus.finalize(args.out_dir)
    except (DataError, RuntimeError) as e:
        logging.getLogger("make_demo_corpus").error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
