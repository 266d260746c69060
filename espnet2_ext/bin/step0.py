"""Stage 4 jobs (step 0, CTC fine-tuning of the SSL model) around ESPnet's training and decoding.

Subcommands::

    # the dev utterances decoded for the convergence check (a data dir of them)
    python -m espnet2_ext.bin.step0 check_set --data_dir data/dev --max_utts 0 --out_dir exp/step0/check/data/dev
    # before/after dev CER; exit status 1 when the final model is still in the CTC blank phase
    python -m espnet2_ext.bin.step0 dev_cer --exp_dir exp/step0 --set dev \\
        --first exp/step0/check/score_1epoch/scores.json --final exp/step0/check/score_final/scores.json \\
        --final_model valid.loss.ave.pth --max_cer 0.95 --out exp/step0/dev_cer.json
    # the fine-tuned upstream as a standalone checkpoint; prints "NAME<TAB>PATH" of its spec
    python -m espnet2_ext.bin.step0 export --upstream_json exp/ssl/upstream.json \\
        --model_file exp/step0/valid.loss.ave.pth --config exp/step0/config.yaml --out exp/step0/upstream

Training, decoding and scoring themselves are ``espnet2_ext.bin.asr_train``,
``espnet2_ext.bin.asr_inference`` (sharded, merged by ``espnet2_ext.bin.sharded_decoding``) and
``espnet2_ext.bin.score`` (see ``stage_finetune`` in run.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from pathlib import Path

from espnet2_ext.data.datadir import select_utterances
from espnet2_ext.utils.fileio import DataError, atomic_write_text, read_kaldi_text, write_kaldi_text

logger = logging.getLogger("step0")

BLANK_PHASE_HINT = (
    "CTC is stuck in the blank phase (it outputs (almost) only blanks). In the step-0 config raise "
    "optim_conf.lr or lengthen the warm-up / training (scheduler_conf, max_epoch or num_iters_per_epoch), "
    "and check that the head sees the top layer (encoder: null, frontend_conf.layer_selection: last); "
    "then remove {exp_dir} and rerun stage 4"
)


def cmd_check_set(args: argparse.Namespace) -> None:
    wav_scp = read_kaldi_text(args.data_dir / "wav.scp")
    text = read_kaldi_text(args.data_dir / "text", allow_empty_value=True)
    missing = sorted(set(wav_scp) - set(text))
    if missing:
        raise DataError(f"{args.data_dir}/text: no transcript for {len(missing)} utterance(s), e.g. {missing[:3]}")
    utts = select_utterances(list(wav_scp), args.max_utts)
    tables = {"wav.scp": wav_scp, "text": text}
    if (args.data_dir / "utt2lang").is_file():  # the scorer's per-language table
        tables["utt2lang"] = read_kaldi_text(args.data_dir / "utt2lang")
    for name, table in tables.items():
        write_kaldi_text(args.out_dir / name, [(u, table[u]) for u in utts])
    logger.info("%s: %d of %d utterances -> %s", args.data_dir, len(utts), len(wav_scp), args.out_dir)


def _set_cer(scores_json: Path, set_name: str) -> dict:
    try:
        entry = json.loads(scores_json.read_text(encoding="utf-8"))["sets"][set_name]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{scores_json}: no scores for set {set_name!r} ({err!r}); rerun the scoring step") from None
    cer = entry["errors"] / entry["ref_chars"] if entry["ref_chars"] else math.nan
    return {"cer": cer, **{k: entry[k] for k in ("n_utts", "ref_chars", "sub", "del", "ins", "errors")}}


def valid_history(checkpoint: Path) -> list[dict]:
    """Per-epoch validation statistics ESPnet's trainer logged (loss, loss_ctc, cer_ctc, ...).

    Read from the reporter state in ``checkpoint.pth`` (written by ESPnet's trainer after each
    epoch); an empty list when the file is missing.
    """
    import torch

    if not checkpoint.is_file():
        return []
    # our own trainer's file; the reporter holds numpy scalars, which weights_only refuses
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    history = []
    for epoch, stats in sorted(state["reporter"]["stats"].items()):
        valid = stats.get("valid", {})
        # NaN marks what a CTC-only model does not compute (attention loss, acc): left out
        history.append({"epoch": int(epoch), **{k: float(v) for k, v in valid.items() if _finite(v)}})
    return history


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def cmd_dev_cer(args: argparse.Namespace) -> int:
    first, final = _set_cer(args.first, args.set), _set_cer(args.final, args.set)
    result = {
        "tag": args.tag,
        "config": args.config,
        "set": args.set,
        "n_utts": final["n_utts"],
        "first_epoch": {"model": "1epoch.pth", **first},
        "final": {"model": args.final_model, **final},
        "max_cer": args.max_cer,
        "converged": final["cer"] < args.max_cer,
        "valid_history": valid_history(args.exp_dir / "checkpoint.pth"),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    logger.info("dev CER (%s, %d utts): after epoch 1 %.3f, final model %.3f -> %s", args.set, final["n_utts"],
                first["cer"], final["cer"], args.out)
    if not final["cer"] < args.max_cer:
        print(
            f"step0: error: the fine-tuned model's CER on {args.set} is {final['cer']:.3f} (after epoch 1: "
            f"{first['cer']:.3f}), not below {args.max_cer}: " + BLANK_PHASE_HINT.format(exp_dir=args.exp_dir),
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> None:
    import yaml

    from espnet2_ext.ssl.export import export_upstream, load_step0_upstream
    from espnet2_ext.ssl.upstream import UpstreamSpec

    try:
        spec = UpstreamSpec.from_dict(json.loads(args.upstream_json.read_text(encoding="utf-8"))["upstream"])
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{args.upstream_json}: no upstream spec ({err!r}); rerun stage 3") from None
    if args.config is not None:
        trained = (yaml.safe_load(args.config.read_text(encoding="utf-8")).get("frontend_conf") or {}).get("upstream")
        if trained != spec.to_dict():
            raise DataError(
                f"{args.config}: the model was fine-tuned from upstream {trained}, but {args.upstream_json} names "
                f"{spec.to_dict()}; the SSL model changed after training: remove {args.config.parent} and rerun stage 4"
            )
    upstream = load_step0_upstream(args.model_file, spec)
    exported = export_upstream(upstream, args.out)
    print(f"{exported.name}\t{exported.path}", file=args.stdout)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check_set", help="the dev subset decoded for the convergence check")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir (wav.scp, text[, utt2lang])")
    p.add_argument("--max_utts", type=int, default=0, help="utterances to keep, spread over the set (0 = all)")
    p.add_argument("--out_dir", type=Path, required=True, help="writes wav.scp, text, utt2lang")
    p.set_defaults(func=cmd_check_set)
    p = sub.add_parser("dev_cer", help="write dev_cer.json (first epoch vs final model); fail if not converged")
    p.add_argument("--exp_dir", type=Path, required=True, help="the step-0 training dir (holds checkpoint.pth)")
    p.add_argument("--set", required=True, help="the scored set's name in scores.json")
    p.add_argument("--first", type=Path, required=True, help="scores.json of the epoch-1 checkpoint")
    p.add_argument("--final", type=Path, required=True, help="scores.json of the final model")
    p.add_argument("--final_model", default="valid.loss.ave.pth", help="file name of the final model (recorded)")
    p.add_argument("--max_cer", type=float, default=0.95, help="fail when the final CER is at least this")
    p.add_argument("--tag", default=None, help="name of the step-0 run (recorded)")
    p.add_argument("--config", default=None, help="the step-0 config (recorded)")
    p.add_argument("--out", type=Path, required=True, help="dev_cer.json to write")
    p.set_defaults(func=cmd_dev_cer)
    p = sub.add_parser("export", help="export the fine-tuned upstream of a step-0 model; prints NAME<TAB>PATH")
    p.add_argument("--upstream_json", type=Path, required=True, help="upstream.json of the SSL model fine-tuned")
    p.add_argument("--model_file", type=Path, required=True, help="the step-0 ESPnet model (*.pth)")
    p.add_argument("--config", type=Path, default=None, help="its config.yaml: checked to name the same upstream")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    # run.sh reads what a command prints (a number, a spec); anything else that writes to stdout
    # (ESPnet prints a notice on import) goes to stderr instead
    args.stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return args.func(args) or 0
    except (DataError, ValueError) as e:
        print(f"step0: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
