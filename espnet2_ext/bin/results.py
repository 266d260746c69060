"""Write RESULTS.md and the per-language chart of a recipe run (run.sh stage 12).

Example:
    python -m espnet2_ext.bin.results --workdir egs2/demo/asr2 --title "Demo (synthetic corpus)"

Reads ``<workdir>/exp/*/score/scores.json`` (stage 11), ``exp/step1_*/layer_weights.json``,
``dump/units/*/stats.json``, ``log/stage_times.tsv`` and the step-2 seed repeats
``exp/step2_<system>.seed<S>/``; writes ``<workdir>/RESULTS.md`` and
``<workdir>/per_language_cer.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from espnet2_ext.scoring.results import (
    collect_systems,
    load_json,
    plot_per_language,
    read_stage_times,
    results_markdown,
    split_seed_repeats,
)
from espnet2_ext.utils.fileio import DataError, atomic_write_text

logger = logging.getLogger("espnet2_ext.bin.results")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet2_ext.bin.results", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="recipe work directory (holds exp/, dump/, log/)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: <workdir>/RESULTS.md)")
    p.add_argument("--title", default="Results", help="first heading of RESULTS.md")
    p.add_argument("--baseline", default="step2_baseline", help="exp dir of the single-layer baseline (row a)")
    p.add_argument("--twostep", default="step2_twostep", help="exp dir of the two-step system (row b)")
    p.add_argument("--continuous", default="step1_step0", help="exp dir of the continuous step-1 model (row d)")
    p.add_argument("--stage_times", type=Path, default=None,
                   help="run.sh's stage times to show (default: <workdir>/log/stage_times.tsv; e.g. a copy kept "
                        "from the default run before extra runs such as --step2_seeds appended theirs)")
    p.add_argument("--note", action="append", default=[], help="an extra line for the Notes section (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    wd: Path = args.workdir
    out = args.out or wd / "RESULTS.md"
    try:
        systems = collect_systems(wd / "exp")
        if not systems:
            raise DataError(f"{wd}/exp/*/score/scores.json: no scored system; run stages 10-11 (decode, score) first")
        chart = out.parent / "per_language_cer.png"
        plot_per_language(split_seed_repeats(systems)[0], chart)  # one bar per system, not per seed
        weights = {p.parent.name: load_json(p) for p in sorted((wd / "exp").glob("step1_*/layer_weights.json"))}
        unit_stats = {p.parent.name: load_json(p) for p in sorted((wd / "dump/units").glob("*/stats.json"))}
        text = results_markdown(
            systems,
            baseline=args.baseline,
            twostep=args.twostep,
            continuous=args.continuous,
            title=args.title,
            layer_weights=weights,
            unit_stats=unit_stats,
            stage_times=read_stage_times(args.stage_times or wd / "log/stage_times.tsv"),
            chart=chart.name,
            notes=args.note,
        )
    except DataError as e:
        print(f"results: error: {e}", file=sys.stderr)
        return 1
    atomic_write_text(out, text)
    logger.info("wrote %s and %s (%d systems)", out, chart, len(systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
