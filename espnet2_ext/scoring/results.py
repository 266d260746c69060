"""RESULTS.md: every system of a recipe run side by side, the published challenge rows below them.

Reads what earlier stages wrote (nothing is recomputed here):

* ``exp/<system>/score/scores.json`` (stage 11, :mod:`espnet2_ext.scoring.report`): CER per set and
  language, the EN (LibriSpeech micro-average) and ML (``test_1h``) figures, the bitrate;
* ``exp/<system>/decode/decode.yaml`` (stages 6 and 10): the decoding options, shown per row;
* ``exp/<system>/config.yaml`` (ESPnet's training config): the training seed;
  ``exp/step2_<system>.seed<S>/`` are seed repeats of a step-2 system (``run.sh --step2_seeds``),
  summarised as mean and standard deviation instead of rows of their own;
* ``exp/step1_<X>/layer_weights.json`` (stage 6): the learned layer weights;
* ``dump/units/<system>/stats.json`` (stage 8): unit rates per set (shown when present);
* ``log/stage_times.tsv`` (run.sh): wall time of each stage.

and writes ``RESULTS.md`` plus ``per_language_cer.png`` (CER by language, one bar per system).

Example:
    >>> rows = collect_systems(Path("egs2/demo/asr2/exp"))           # doctest: +SKIP
    >>> print(results_markdown(rows, ...))                            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from espnet2_ext.utils.fileio import DataError

logger = logging.getLogger(__name__)

KNOWN_SYSTEMS: dict[str, tuple[str, str]] = {
    # exp dir name -> (row label, what it is); rows are listed in this order, unknown systems after
    "step2_baseline": (
        "(a) single-layer units (challenge-style baseline)",
        "k-means units from ONE layer of the pretrained SSL model (no step 0), at the challenge's relative depth",
    ),
    "step2_twostep": (
        "(b) two-step units",
        "k-means units of the step-0 fine-tuned SSL model, layers summed with the step-1 learned weights",
    ),
    "step2_learned_nostep0": (
        "(c) learned weights, no step 0",
        "k-means units of the pretrained SSL model with the weights learned by step 1 on it",
    ),
    "step2_uniform": (
        "(c) uniform weights after step 0",
        "k-means units of the step-0 fine-tuned SSL model, all layers weighted equally",
    ),
    "step2_mfcc": ("MFCC units (reference)", "k-means units of MFCC frames: what any SSL unit must beat"),
    "step1_step0": (
        "(d) continuous, step 0 + learned weights",
        "step-1 model: learned weighted sum of the fine-tuned SSL model's hidden states (no k-means)",
    ),
    "step1_ssl": (
        "continuous, learned weights, no step 0",
        "step-1 model on the pretrained SSL model's hidden states (no k-means)",
    ),
}

# Published numbers on REAL data (METHOD.md sections 1-2): ML-SUPERB test_1h and LibriSpeech, the
# Interspeech 2024 Discrete Speech Unit Challenge. EN = micro-averaged CER over the 4 LibriSpeech sets.
PUBLISHED_ROWS: tuple[tuple[str, str, str, str], ...] = (
    # (system, EN CER %, ML CER %, bitrate bit/s)
    ("Challenge baseline: WavLM-large layer 21, K=2000, BPE 3000 (beam 20)", "1.6 / 3.4 / 1.5 / 3.3 (per set)", "22.9",
     "n/a"),
    ("CTAIT `xlsr2_300m_multi_baseline`", "5.76", "24.49", "400.64"),
    ("CTAIT `SystemA`", "2.23", "17.99", "296.67"),
    ("CTAIT `char`", "2.21", "17.32", "262.64"),
    ("CTAIT `system_e_branchformer_fusion3`", "1.91", "16.03", "946.77"),
    ("JHU `fuse_char`", "1.98", "20.23", "599.2"),
    ("JHU `discrete_asr_hmm_tokenizer_bpe`", "2.26", "21.64", "400.47"),
)
PUBLISHED_CONTINUOUS = "L0 30.3, L3 29.6, L6 28.6, L9 41.0, L12 46.7, L15 34.5, L18 26.5, L21 32.0"
PAPER_REDUCTION_PCT = 44.0  # arXiv 2509.01900: relative CER reduction of XLS-R units on ML-SUPERB
SEED_REPEAT = re.compile(r"^(?P<key>.+)\.seed(?P<seed>\d+)$")  # exp dir of a seed repeat (run.sh --step2_seeds)


@dataclass
class SystemResult:
    """One scored system.

    Attributes:
        key: its directory name under ``exp/``.
        label: row label.
        description: one line on what it is.
        scores: the system's ``scores.json`` as loaded.
    """

    key: str
    label: str
    description: str
    scores: dict[str, Any] = field(repr=False)
    decoding: str = "?"
    seed: int | None = None

    @property
    def ml_cer(self) -> float | None:
        """ML-SUPERB ``test_1h`` CER in percent (None when not scored)."""
        ml = self.scores["summary"].get("mlsuperb")
        return None if ml is None else ml["cer_percent"]

    @property
    def en_cer(self) -> float | None:
        """LibriSpeech micro-averaged CER in percent (None when not scored)."""
        en = self.scores["summary"].get("librispeech_micro")
        return None if en is None else en["cer_percent"]

    @property
    def en_complete(self) -> bool:
        en = self.scores["summary"].get("librispeech_micro")
        return bool(en and en["complete"])

    @property
    def bitrate(self) -> float | None:
        """Pooled challenge bitrate in bit/s (None for continuous systems)."""
        br = self.scores["summary"].get("bitrate")
        return None if br is None else br["pooled_bps"]

    def language_cer(self) -> dict[str, float]:
        """CER % per language over all scored sets pooled (``eng`` includes LibriSpeech)."""
        errors: dict[str, int] = {}
        chars: dict[str, int] = {}
        for entry in self.scores["sets"].values():
            for lang, c in entry["languages"].items():
                errors[lang] = errors.get(lang, 0) + c["errors"]
                chars[lang] = chars.get(lang, 0) + c["ref_chars"]
        return {lang: 100 * errors[lang] / chars[lang] for lang in sorted(chars) if chars[lang]}


def describe_decoding(path: Path) -> str:
    """One phrase for the decoding options in ``path`` (a decode config copied by stage 6 or 10); "?" if absent."""
    if not path.is_file():
        return "?"
    import yaml

    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e}); rerun the decode stage that wrote it") from None
    beam, ctc = conf.get("beam_size"), conf.get("ctc_weight")
    if beam == 1 and ctc == 1.0:
        return "best CTC path"
    return f"beam {beam}, CTC weight {ctc}" + (f", LM weight {conf['lm_weight']}" if conf.get("lm_weight") else "")


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); rerun the stage that wrote it") from None


def training_seed(exp: Path) -> int | None:
    """The ``seed`` of the training config ESPnet wrote to ``exp/config.yaml`` (None when absent)."""
    path = exp / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        seed = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("seed")
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e}); retrain the system that wrote it") from None
    return seed if isinstance(seed, int) else None


def collect_systems(exp_dir: Path) -> list[SystemResult]:
    """Every ``exp/<system>/score/scores.json``, known systems first in :data:`KNOWN_SYSTEMS` order.

    A seed repeat ``<system>.seed<S>`` follows its system and takes its label.
    """
    found = {p.parent.parent.name: p for p in sorted(exp_dir.glob("*/score/scores.json"))}

    def base(key: str) -> str:
        m = SEED_REPEAT.match(key)
        return m["key"] if m else key

    def order(key: str) -> tuple[int, str, int]:
        m = SEED_REPEAT.match(key)
        b = base(key)
        known = list(KNOWN_SYSTEMS).index(b) if b in KNOWN_SYSTEMS else len(KNOWN_SYSTEMS)
        return known, b, -1 if m is None else int(m["seed"])

    results = []
    for key in sorted(found, key=order):
        label, description = KNOWN_SYSTEMS.get(base(key), (base(key), ""))
        decoding = describe_decoding(exp_dir / key / "decode" / "decode.yaml")
        results.append(SystemResult(key, label, description, load_json(found[key]), decoding,
                                    training_seed(exp_dir / key)))
    return results


def split_seed_repeats(systems: Sequence[SystemResult]) -> tuple[list[SystemResult], dict[str, list[SystemResult]]]:
    """The rows of the main table, and per row key every run of it over seeds (itself first, then its repeats).

    Only rows with at least one repeat ``<key>.seed<S>`` appear in the mapping; a repeat whose system
    has no run of its own becomes a row.
    """
    keys = {s.key for s in systems}
    rows, runs = [], {}
    for s in systems:
        m = SEED_REPEAT.match(s.key)
        if m and m["key"] in keys:
            runs.setdefault(m["key"], []).append(s)
        else:
            rows.append(s)
    return rows, {r.key: [r, *runs[r.key]] for r in rows if r.key in runs}


def relative_reduction(baseline: float | None, system: float | None) -> float | None:
    """``100 * (baseline - system) / baseline`` (percent; positive = fewer errors), None if undefined."""
    if baseline is None or system is None or baseline == 0:
        return None
    return 100.0 * (baseline - system) / baseline


class StageTime(NamedTuple):
    """A row of run.sh's ``stage_times.tsv``: ``stage<TAB>name<TAB>seconds<TAB>date[<TAB>chain]``.

    ``stage`` is a number, or ``FIRST-LAST`` for stages run as two chains at once (``--parallel_chains``),
    whose own stages carry their ``chain`` (ssl, step0): they overlap, so only rows without one add up.
    """

    stage: str
    name: str
    seconds: int
    chain: str = ""


def read_stage_times(path: Path) -> list[StageTime]:
    """The LAST run of each stage (of each chain) in run.sh's ``stage_times.tsv``, in stage order."""
    if not path.is_file():
        return []
    last: dict[tuple[str, str], StageTime] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if len(row) < 3 or not row[2].isdigit() or not re.fullmatch(r"\d+(-\d+)?", row[0]):
                raise DataError(f"{path}:{lineno}: expected 'stage<TAB>name<TAB>seconds[<TAB>date<TAB>chain]', "
                                f"got {row}")
            chain = row[4] if len(row) > 4 else ""
            last[row[0], chain] = StageTime(row[0], row[1], int(row[2]), chain)
    # a chained range first, then its chains' stages
    return sorted(last.values(), key=lambda t: (int(t.stage.split("-")[0]), bool(t.chain), len(t.stage), t.stage, t.chain))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _layer_weight_lines(weights: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not weights:
        return []
    n = max(len(w["weights"]) for w in weights.values())
    out = ["## Learned layer weights (step 1)", "",
           "softmax weight of each hidden state (0 = CNN/projection output, i = after transformer layer i):", "",
           "| step-1 run | " + " | ".join(str(i) for i in range(n)) + " | top state |",
           "|---|" + "---:|" * (n + 1)]
    for run, w in weights.items():
        values = list(w["weights"])
        top = max(range(len(values)), key=values.__getitem__)
        out.append(f"| {run} | " + " | ".join(f"{v:.3f}" for v in values) + " |" * (n - len(values)) + f" | {top} |")
    out += ["", "Charts: " + ", ".join(f"`exp/{run}/layer_weights.png`" for run in weights), ""]
    return out


def _unit_stats_lines(unit_stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not unit_stats:
        return []
    out = ["## Units", "",
           "Pooled over the evaluation sets (stage 8's `dump/units/<system>/stats.json`): deduplicated units "
           "per input unit, source BPE tokens per second, and the challenge bitrate of those tokens.", "",
           "| unit system | features | K | BPE | dedup ratio | BPE tokens/s | bitrate (bit/s) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for system, stats in unit_stats.items():
        summary, conf = stats.get("summary", {}), stats.get("system", {})
        out.append(f"| `{system}` | {conf.get('features', '?')} | {stats.get('k', '?')} | {stats.get('bpe_vocab_size', '?')} | "
                   f"{_fmt(summary.get('dedup_ratio'))} | {_fmt(summary.get('bpe_tokens_per_second'), 1)} | "
                   f"{_fmt(summary.get('bitrate'), 1)} |")
    return out + [""]


def _mean_sd(values: Sequence[float]) -> str:
    if len(values) < 2:
        return _fmt(values[0]) if values else "n/a"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _seed_label(s: SystemResult) -> str:
    return "?" if s.seed is None else str(s.seed)


def _seed_repeat_lines(repeats: Mapping[str, Sequence[SystemResult]], baseline: str, twostep: str) -> list[str]:
    if not repeats:
        return []
    out = ["## Step-2 seed repeats", "",
           "The same units and step-2 config, trained again with other seeds (`run.sh --step2_seeds`): how much of a "
           "difference between rows is training noise. Mean ± sample standard deviation over the seeds.", "",
           "| system | seeds | ML CER per seed | ML mean ± sd | EN CER per seed | EN mean ± sd |",
           "|---|---|---|---:|---|---:|"]
    for key, runs in repeats.items():
        ml = [r.ml_cer for r in runs if r.ml_cer is not None]
        en = [r.en_cer for r in runs if r.en_cer is not None]
        out.append(f"| `{key}` | {', '.join(_seed_label(r) for r in runs)} | "
                   f"{', '.join(_fmt(r.ml_cer) for r in runs)} | {_mean_sd(ml)} | "
                   f"{', '.join(_fmt(r.en_cer) for r in runs)} | {_mean_sd(en)} |")
    out.append("")
    if baseline in repeats and twostep in repeats:
        for name, cer in (("ML", lambda r: r.ml_cer), ("EN", lambda r: r.en_cer)):
            b = [cer(r) for r in repeats[baseline] if cer(r) is not None]
            t = [cer(r) for r in repeats[twostep] if cer(r) is not None]
            if not b or not t:
                continue
            by_seed = {r.seed: cer(r) for r in repeats[baseline] if r.seed is not None}
            paired = [relative_reduction(by_seed[r.seed], cer(r)) for r in repeats[twostep] if r.seed in by_seed]
            paired = [p for p in paired if p is not None]
            line = (f"- Two-step vs single-layer units, mean {name} CER over seeds: {_mean_sd(b)} -> {_mean_sd(t)} "
                    f"({_fmt(relative_reduction(statistics.mean(b), statistics.mean(t)), 1)} % relative)")
            if paired:
                line += (f"; per seed (same seed for both, {len(paired)} pairs): {_fmt(min(paired), 1)} to "
                         f"{_fmt(max(paired), 1)} % relative")
            out.append(line + ".")
        out.append("")
    return out


def results_markdown(
    systems: Sequence[SystemResult],
    *,
    baseline: str,
    twostep: str,
    continuous: str,
    title: str,
    layer_weights: Mapping[str, Mapping[str, Any]] | None = None,
    unit_stats: Mapping[str, Mapping[str, Any]] | None = None,
    stage_times: Sequence[StageTime] = (),
    chart: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The whole RESULTS.md text.

    Args:
        systems: scored systems (rows, in order); seed repeats (:func:`split_seed_repeats`) get a section
            of their own instead of rows.
        baseline: key of the single-layer baseline (relative reductions are against it).
        twostep: key of the two-step system (its reduction is the headline figure).
        continuous: key of the continuous step-1 model it is compared with.
        title: first heading (which recipe and data).
        layer_weights: step-1 run name -> its layer_weights.json.
        unit_stats: unit system -> its stats.json.
        stage_times: from :func:`read_stage_times`.
        chart: file name of the per-language chart, relative to RESULTS.md.
        notes: extra bullet lines (e.g. how the demo differs from real data).
    """
    systems, repeats = split_seed_repeats(systems)
    by_key = {s.key: s for s in systems}
    base = by_key.get(baseline)
    out = [f"# {title}", "",
           "CER in % (ML-SUPERB normalisation, spaces counted). ML = `test_1h`; EN = micro-average over "
           "LibriSpeech dev-clean, dev-other, test-clean, test-other; bitrate = challenge formula, pooled over all "
           "scored sets (continuous systems have none). Relative = CER reduction against row (a).", ""]
    out += ["| system | ML CER | EN CER | bitrate (bit/s) | relative ML | relative EN | decoding |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for s in systems:
        en = _fmt(s.en_cer) + ("" if s.en_complete or s.en_cer is None else " (partial)")
        rel_ml = relative_reduction(base.ml_cer, s.ml_cer) if base else None
        rel_en = relative_reduction(base.en_cer, s.en_cer) if base else None
        out.append(f"| {s.label} (`{s.key}`) | {_fmt(s.ml_cer)} | {en} | {_fmt(s.bitrate)} | "
                   f"{_fmt(rel_ml, 1)}{' %' if rel_ml is not None else ''} | "
                   f"{_fmt(rel_en, 1)}{' %' if rel_en is not None else ''} | {s.decoding} |")
    out.append("")
    out += [f"- `{s.key}`: {s.description}" for s in systems if s.description]
    out.append("")

    two, cont = by_key.get(twostep), by_key.get(continuous)
    out += ["## The two-step effect", ""]
    if base and two:
        red = relative_reduction(base.ml_cer, two.ml_cer)
        out.append(f"- Two-step units vs single-layer units, ML CER: {_fmt(base.ml_cer)} -> {_fmt(two.ml_cer)} "
                   f"({_fmt(red, 1)} % relative; the paper reports {PAPER_REDUCTION_PCT:.0f} % on real data, "
                   f"our demo goal is at least 30 %).")
        red_en = relative_reduction(base.en_cer, two.en_cer)
        out.append(f"- Same on EN CER: {_fmt(base.en_cer)} -> {_fmt(two.en_cer)} ({_fmt(red_en, 1)} % relative).")
    else:
        out.append(f"- Not available: `{baseline}` or `{twostep}` has no scores.")
    if two and cont:
        out.append(f"- Two-step units vs the continuous model `{continuous}` (ML CER): {_fmt(two.ml_cer)} vs "
                   f"{_fmt(cont.ml_cer)}.")
    out.append("")
    out += _seed_repeat_lines(repeats, baseline, twostep)

    if chart:
        out += ["## CER by language", "", f"![CER by language]({chart})", ""]
        langs = sorted({lang for s in systems for lang in s.language_cer()})
        if langs:
            out += ["| system | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs)]
            for s in systems:
                cer = s.language_cer()
                out.append(f"| `{s.key}` | " + " | ".join(_fmt(cer.get(lang), 1) for lang in langs) + " |")
            out.append("")

    out += _layer_weight_lines(layer_weights or {})
    out += _unit_stats_lines(unit_stats or {})

    if stage_times:
        total = sum(t.seconds for t in stage_times if not t.chain)
        out += ["## Wall time per stage (last run of each)", ""]
        if any(t.chain for t in stage_times):
            out += ["Stages in parentheses ran inside one of two chains at once (`--parallel_chains`): they "
                    "overlap, and the chained range's row gives their wall time.", ""]
        out += ["| stage | name | seconds |", "|---:|---|---:|"]
        out += [f"| {t.stage} | {t.name} (chain {t.chain}) | ({t.seconds}) |" if t.chain else
                f"| {t.stage} | {t.name} | {t.seconds} |" for t in stage_times]
        out += [f"| | total | {total} |", ""]

    out += ["## Published numbers (REAL data: ML-SUPERB 1h + LibriSpeech-100; not comparable with a demo run)", "",
            "| system | EN CER | ML CER | bitrate (bit/s) |", "|---|---:|---:|---:|"]
    out += [f"| {name} | {en} | {ml} | {br} |" for name, en, ml, br in PUBLISHED_ROWS]
    out += ["", f"- Continuous WavLM-large reference, test_1h CER by single frozen layer: {PUBLISHED_CONTINUOUS}.",
            f"- The two-step paper (arXiv 2509.01900): {PAPER_REDUCTION_PCT:.0f} % relative CER reduction on ML-SUPERB "
            "for XLS-R discrete tokens (26 % for the WavLM baseline's comparable setting).", ""]
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(out)


def plot_per_language(systems: Sequence[SystemResult], out_png: Path) -> None:
    """Grouped bar chart: CER % per language (x), one bar per system; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from espnet2_ext.utils.fileio import atomic_open

    langs = sorted({lang for s in systems for lang in s.language_cer()})
    if not langs or not systems:
        raise DataError("per-language chart: no scored languages; run the score stage first")
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(langs) + 2), 4.5))
    for i, s in enumerate(systems):
        cer = s.language_cer()
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(langs))]
        ax.bar(xs, [cer.get(lang, 0.0) for lang in langs], width, label=s.key)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("CER (%)")
    ax.set_title("CER by language (all scored sets pooled; eng includes LibriSpeech)")
    # below the axes: inside, it hid the bars of the first languages
    ax.legend(fontsize=7, ncol=min(len(systems), 4), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
