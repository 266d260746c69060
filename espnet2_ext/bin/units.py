"""Stages 7-8 jobs: k-means unit models and units for every set (one subcommand per job).

Subcommands (``C`` = ``conf/units/<recipe>.yaml``, ``S`` = a system name, ``W`` = the workdir)::

    units list        --units_config C [--systems "twostep baseline"]         # names, one a line
    units spec        --units_config C --system S --workdir W                 # exp/kmeans/S/feature_spec.json
    units dump_feats  --units_config C --system S [--system S2 ...] --workdir W --data_dir data/train \
                      --shard J --nshard N                                 # exp/kmeans/S/feats/feats.J.npy
    units learn       --units_config C --system S --workdir W                 # exp/kmeans/S/{centroids.npy,...}
    units groups      --workdir W --systems "S1 S2 ..." [--learning --units_config C]
                      # the systems that share an SSL model (and, --learning, a k-means subset), a line per group
    units dump_units  --model_dir exp/kmeans/S --out_root dump/units/S [--model_dir ... --out_root ...] \
                      --data_root data --sets "train dev ..." --shard J --nshard N   # <set>/split/units.J
    units finish_sets --data_root data --out_root dump/units/S --sets "..." --nshard N   # <set>/{units,text}
    units bpe         --units_config C --system S --units_dir dump/units/S --train_set train --sets "..."
    units stats       --units_config C --system S --units_dir dump/units/S --data_root data --sets "..."

See :mod:`espnet2_ext.tokenizer` for what each writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from espnet2_ext.bin.cli import run_subcommand
from espnet2_ext.utils.fileio import DataError, atomic_write_text, remove_stale_temp_files

logger = logging.getLogger("units")

SPEC_FILE = "feature_spec.json"


def _system(args: argparse.Namespace):
    from espnet2_ext.tokenizer.systems import load_units_config, select_systems

    return select_systems(load_units_config(args.units_config), args.system)[0]


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _extractor(spec, device: str):
    from espnet2_ext.tokenizer.features import FeatureExtractor

    return FeatureExtractor(spec).to(_device(device))


def _upstream_key(spec) -> str:
    """Specs with equal keys are computed from the same SSL model (MFCC specs share the key 'mfcc')."""
    return "mfcc" if spec.upstream is None else json.dumps(dict(spec.upstream), sort_keys=True)


def _read_spec(exp_dir: Path):
    from espnet2_ext.tokenizer.features import FeatureSpec

    path = exp_dir / SPEC_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; run 'units spec' (stage 7) first")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("system", None)  # the settings it was resolved from, kept for people reading the file
    return FeatureSpec.from_dict(data)


def cmd_list(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.systems import load_units_config, select_systems

    for system in select_systems(load_units_config(args.units_config), args.systems, args.chain):
        print(system.name)


def cmd_spec(args: argparse.Namespace) -> None:
    system = _system(args)
    spec = system.feature_spec(args.workdir)
    out = args.workdir / "exp" / "kmeans" / system.name / SPEC_FILE
    atomic_write_text(out, json.dumps({**spec.to_dict(), "system": system.to_dict()}, indent=2) + "\n")
    logger.info("%s: %s -> %s", system.name, spec.describe(), out)


def cmd_dump_feats(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.dump import dump_features
    from espnet2_ext.tokenizer.features import FeatureExtractor
    from espnet2_ext.tokenizer.systems import load_units_config, select_systems

    systems = select_systems(load_units_config(args.units_config), " ".join(args.system))
    if len({_learning_key(s, _read_spec(args.workdir / "exp/kmeans" / s.name)) for s in systems}) != 1:
        raise DataError(f"{' '.join(args.system)}: these systems use different SSL models or k-means subsets "
                        "(portion, seed); dump them in separate jobs (one per group of 'units groups --learning')")
    todo = [s for s in systems if not (args.workdir / "exp/kmeans" / s.name / "feats" / f"lengths.{args.shard}").is_file()]
    for s in systems:
        if s not in todo:  # lengths.J is written last
            logger.info("%s: feature shard %d already dumped", s.name, args.shard)
    if not todo:
        return
    # one upstream, loaded once, for every system of this job
    specs = [_read_spec(args.workdir / "exp/kmeans" / s.name) for s in todo]
    first = _extractor(specs[0], args.device)
    extractors = [first] + [FeatureExtractor(spec, first.upstream).to(_device(args.device)) for spec in specs[1:]]
    dump_features([(e, args.workdir / "exp/kmeans" / s.name / "feats") for e, s in zip(extractors, todo)],
                  args.data_dir, todo[0].portion, todo[0].seed, args.shard, args.nshard)


def cmd_learn(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.dump import open_features, sample_frames
    from espnet2_ext.tokenizer.kmeans import fit_kmeans, mean_squared_distance
    from espnet2_ext.tokenizer.unit_model import UnitModel

    system = _system(args)
    exp = args.workdir / "exp" / "kmeans" / system.name
    spec = _read_spec(exp)
    arrays = open_features(exp / "feats")
    total = sum(len(a) for a in arrays)
    x = sample_frames(arrays, system.k * system.max_points_per_centroid, system.seed)
    logger.info("%s: k-means K=%d on %d of %d dumped frames (%d dims, %.2f GB in RAM)", system.name, system.k,
                len(x), total, x.shape[1], x.nbytes / 1e9)
    start = time.monotonic()
    centroids = fit_kmeans(x, system.k, niter=system.niter, seed=system.seed,
                           max_points_per_centroid=system.max_points_per_centroid,
                           init_points_per_centroid=system.init_points_per_centroid)
    fit_s = time.monotonic() - start
    del x
    distortion = sum(mean_squared_distance(a, centroids) * len(a) for a in arrays) / total
    meta = {"k": system.k, "niter": system.niter, "seed": system.seed,
            "max_points_per_centroid": system.max_points_per_centroid,
            "init_points_per_centroid": system.init_points_per_centroid, "portion": system.portion,
            "frames_dumped": total, "frames_fit": min(total, system.k * system.max_points_per_centroid),
            "fit_seconds": fit_s, "mean_squared_distance": distortion, "implementation": "faiss.Kmeans (greedy k-means++ seeding on K x init_points_per_centroid frames)"}
    model = UnitModel(centroids, spec, meta)
    model.save(exp)
    model.export_sklearn(exp / f"km_{system.k}.mdl")
    remove_stale_temp_files(exp)  # of an earlier learn (or feature dump) killed mid-write
    logger.info("%s: fit in %.1f s, mean squared distance %.4g over the dumped frames -> %s", system.name, fit_s,
                distortion, exp)


def _learning_key(system, spec) -> str:
    """Systems with equal keys learn from the same SSL model's features of the same train subset."""
    return json.dumps([_upstream_key(spec), system.portion, system.seed])


def cmd_groups(args: argparse.Namespace) -> None:
    groups: dict[str, list[str]] = {}
    systems = {}
    if args.learning:
        from espnet2_ext.tokenizer.systems import load_units_config, select_systems

        if args.units_config is None:
            raise DataError("units groups --learning needs --units_config (the subsets' portion and seed)")
        systems = {s.name: s for s in select_systems(load_units_config(args.units_config), args.systems)}
    for name in args.systems.split():
        spec = _read_spec(args.workdir / "exp" / "kmeans" / name)
        key = _learning_key(systems[name], spec) if args.learning else _upstream_key(spec)
        groups.setdefault(key, []).append(name)
    for names in groups.values():
        print(" ".join(names))


def cmd_dump_units(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.dump import dump_units
    from espnet2_ext.tokenizer.features import FeatureExtractor
    from espnet2_ext.tokenizer.unit_model import UnitModel

    if len(args.model_dir) != len(args.out_root):
        raise DataError(f"{len(args.model_dir)} --model_dir but {len(args.out_root)} --out_root; give one per system")
    models = [UnitModel.load(d) for d in args.model_dir]
    if len({_upstream_key(m.spec) for m in models}) != 1:
        raise DataError(f"{' '.join(map(str, args.model_dir))}: these unit models use different SSL models; dump "
                        "them in separate jobs (one per group of 'units groups')")
    # one upstream, loaded once, for every system and set of this job
    first = _extractor(models[0].spec, args.device)
    extractors = [first] + [FeatureExtractor(m.spec, first.upstream).to(_device(args.device)) for m in models[1:]]
    for name in args.sets.split():
        todo = [(m, e, out / name) for m, e, out in zip(models, extractors, args.out_root)
                if not (out / name / "split" / f"units.{args.shard}").is_file()]
        if not todo:
            logger.info("%s: unit shard %d already dumped for every system", name, args.shard)
            continue
        dump_units(todo, args.data_root / name, args.shard, args.nshard)


def cmd_finish_sets(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.bpe import write_unit_text
    from espnet2_ext.tokenizer.dump import merge_units

    for name in args.sets.split():
        out = args.out_root / name
        merge_units(out, args.nshard, args.data_root / name)
        write_unit_text(out / "units", out / "text")


def cmd_bpe(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.bpe import encode_text, train_bpe

    system = _system(args)
    model = train_bpe(args.units_dir / args.train_set / "text", args.units_dir / "src_bpe", system.bpe_vocab_size)
    for name in args.sets.split():
        encode_text(model, args.units_dir / name / "text", args.units_dir / name / "tokens")
    logger.info("%s: source BPE %d -> %s; tokens for %s", system.name, system.bpe_vocab_size, model, args.sets)


def cmd_stats(args: argparse.Namespace) -> None:
    from espnet2_ext.tokenizer.stats import format_stats, unit_stats, write_stats

    system = _system(args)
    stats = {"system": system.to_dict(), **unit_stats(args.units_dir, args.data_root, args.sets.split(), system.k,
                                                      args.fs, eval_sets=args.eval_sets.split())}
    write_stats(stats, args.units_dir / "stats.json")
    atomic_write_text(args.units_dir / "stats.md", f"# Units of system {system.name}\n\n" + format_stats(stats))
    remove_stale_temp_files(args.units_dir)  # the last step of stage 8: of jobs killed mid-write in an earlier run
    logger.info("%s: statistics -> %s", system.name, args.units_dir / "stats.json")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str, system: bool = True, shard: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if system:
            p.add_argument("--units_config", type=Path, required=True, help="conf/units/<recipe>.yaml")
            p.add_argument("--system", required=True, help="unit system name")
        if shard:
            p.add_argument("--shard", type=int, required=True, help="this job's shard (1-based)")
            p.add_argument("--nshard", type=int, required=True, help="number of shards")
            p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="SSL forward device")
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_list, "print the selected unit systems", system=False)
    p.add_argument("--units_config", type=Path, required=True)
    p.add_argument("--systems", default="", help="space-separated subset (empty: all)")
    p.add_argument("--chain", default="", choices=["", "ssl", "step0"],
                   help="only the systems of this chain of run.sh's stages 4-10 (step0: they read the step-0 model "
                   "or weights learned on it; ssl: the others)")
    p = add("spec", cmd_spec, "resolve a system's feature spec")
    p.add_argument("--workdir", type=Path, required=True)
    p = add("dump_feats", cmd_dump_feats, "features of the k-means subset of train (one shard), for systems on one "
            "SSL model", system=False, shard=True)
    p.add_argument("--units_config", type=Path, required=True, help="conf/units/<recipe>.yaml")
    p.add_argument("--system", required=True, action="append", help="unit system name (repeatable)")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--data_dir", type=Path, required=True, help="the training data dir")
    p = add("learn", cmd_learn, "k-means on the dumped features; unit model + km_<K>.mdl")
    p.add_argument("--workdir", type=Path, required=True)
    p = add("groups", cmd_groups, "the systems that share an SSL model (one SSL pass in dump_units; with --learning "
            "in dump_feats)", system=False)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--learning", action="store_true", help="also group by k-means subset (portion, seed): stage 7")
    p.add_argument("--units_config", type=Path, default=None, help="conf/units/<recipe>.yaml (with --learning)")
    p.add_argument("--systems", required=True, help="space-separated systems with a feature spec (stage 7)")
    p = add("dump_units", cmd_dump_units, "units of one shard of every set, for systems on one SSL model",
            system=False, shard=True)
    p.add_argument("--model_dir", type=Path, required=True, action="append", help="exp/kmeans/<system> (repeatable)")
    p.add_argument("--data_root", type=Path, required=True, help="holds <set>/{wav.scp,utt2num_samples}")
    p.add_argument("--out_root", type=Path, required=True, action="append",
                   help="dump/units/<system>: <set>/split/units.J, one per --model_dir, in the same order")
    p.add_argument("--sets", required=True, help="space-separated set names")
    p = add("finish_sets", cmd_finish_sets, "merge the shards of every set; write the unit strings", system=False)
    p.add_argument("--data_root", type=Path, required=True)
    p.add_argument("--out_root", type=Path, required=True)
    p.add_argument("--sets", required=True)
    p.add_argument("--nshard", type=int, required=True)
    p = add("bpe", cmd_bpe, "train the source BPE on train; tokens for every set")
    p.add_argument("--units_dir", type=Path, required=True, help="dump/units/<system>")
    p.add_argument("--train_set", required=True)
    p.add_argument("--sets", required=True, help="space-separated sets to encode")
    p = add("stats", cmd_stats, "per-set token rates and bitrates -> stats.json")
    p.add_argument("--units_dir", type=Path, required=True)
    p.add_argument("--data_root", type=Path, required=True)
    p.add_argument("--sets", required=True)
    p.add_argument("--eval_sets", default="", help="sets pooled in the summary (the test sets)")
    p.add_argument("--fs", type=int, default=16000)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(get_parser(), argv, "units")


if __name__ == "__main__":
    sys.exit(main())
