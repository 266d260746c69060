"""RESULTS.md: rows from real scores.json files (written by the project's scorer), relative figures, chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espnet2_ext.bin import results as results_cli
from espnet2_ext.bin import score as score_cli
from espnet2_ext.scoring.results import collect_systems, read_stage_times, relative_reduction
from espnet2_ext.utils.fileio import DataError

REFS = {
    "test_1h": {"a_deu_000001": "HALLO WELT", "b_rus_000001": "ПРИВЕТ МИР", "c_spa_000001": "HOLA MUNDO"},
    "dev_clean": {"1-1-0001": "HELLO WORLD"},
}


def _workdir(tmp_path: Path, hyps: dict[str, dict[str, str]]) -> Path:
    """A workdir with data/<set>/text and exp/<system>/score/scores.json made by the real scorer."""
    wd = tmp_path / "wd"
    for set_name, refs in REFS.items():
        d = wd / "data" / set_name
        d.mkdir(parents=True)
        (d / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()), encoding="utf-8")
        langs = {u: u.split("_")[-2] if "_" in u else "eng" for u in refs}
        (d / "utt2lang").write_text("".join(f"{u} {lang}\n" for u, lang in langs.items()))
    for system, edit in hyps.items():
        for set_name, refs in REFS.items():
            d = wd / "exp" / system / "decode" / set_name
            d.mkdir(parents=True)
            (d / "text").write_text("".join(f"{u} {edit.get(u, t)}\n" for u, t in refs.items()), encoding="utf-8")
        rc = score_cli.main(["--data_dir", str(wd / "data"), "--hyp_dir", str(wd / "exp" / system / "decode"),
                             "--sets", *REFS, "--out_dir", str(wd / "exp" / system / "score")])
        assert rc in (0, None)
    return wd


def test_relative_reduction() -> None:
    assert relative_reduction(40.0, 20.0) == pytest.approx(50.0)
    assert relative_reduction(20.0, 30.0) == pytest.approx(-50.0)
    assert relative_reduction(0.0, 1.0) is None and relative_reduction(None, 1.0) is None


def test_results_table_rows_relative_figures_and_chart(tmp_path: Path) -> None:
    wd = _workdir(tmp_path, {
        "step2_baseline": {"a_deu_000001": "HALO WELT", "b_rus_000001": "ПРИВЕТ", "1-1-0001": "HELO WORLD"},
        "step2_twostep": {"b_rus_000001": "ПРИВЕТ MИР"},
        "step1_step0": {},
        "my_system": {"c_spa_000001": ""},
    })
    (wd / "log").mkdir()
    (wd / "log/stage_times.tsv").write_text(
        "1\tcorpus\t90\n2\tdata\t9\n1\tcorpus\t80\n"
        # stages 4-5 as two chains (run.sh --parallel_chains): each chain's rows, then the range's wall time
        "5\tstep1\t60\t2026-01-01T10:01:00\tssl\n4\tfinetune\t70\t2026-01-01T10:01:10\tstep0\n"
        "5\tstep1\t30\t2026-01-01T10:01:40\tstep0\n4-5\tchains\t100\t2026-01-01T10:01:40\t\n")
    (wd / "exp/step1_step0/layer_weights.json").write_text(json.dumps({"weights": [0.1, 0.2, 0.7]}))
    # the decoding options stages 6 and 10 copy next to the hypotheses
    (wd / "exp/step2_baseline/decode/decode.yaml").write_text("beam_size: 5\nctc_weight: 0.3\nlm_weight: 0.0\n")
    (wd / "exp/step2_twostep/decode/decode.yaml").write_text("beam_size: 1\nctc_weight: 1.0\n")
    (wd / "dump/units/twostep").mkdir(parents=True)
    (wd / "dump/units/twostep/stats.json").write_text(json.dumps({
        "system": {"features": "learned"}, "k": 500, "bpe_vocab_size": 600,
        "summary": {"dedup_ratio": 0.7519, "bpe_tokens_per_second": 32.149, "bitrate": 296.702}}))

    assert results_cli.main(["--workdir", str(wd), "--title", "Test run"]) == 0
    text = (wd / "RESULTS.md").read_text(encoding="utf-8")
    systems = {s.key: s for s in collect_systems(wd / "exp")}
    # known systems first, in table order, unknown ones after
    assert [s.key for s in collect_systems(wd / "exp")] == ["step2_baseline", "step2_twostep", "step1_step0",
                                                              "my_system"]
    base, two = systems["step2_baseline"], systems["step2_twostep"]
    assert base.ml_cer > two.ml_cer > 0 and systems["step1_step0"].ml_cer == 0
    rel = relative_reduction(base.ml_cer, two.ml_cer)
    assert f"{rel:.1f} % relative" in text
    row = next(line for line in text.splitlines() if "`step2_twostep`" in line and line.startswith("|"))
    assert f"{two.ml_cer:.2f}" in row and f"{rel:.1f} %" in row and row.endswith("| best CTC path |")
    assert base.decoding == "beam 5, CTC weight 0.3" and systems["my_system"].decoding == "?"
    # per-language figures: rus errors only in the two-step system, eng pooled from LibriSpeech
    lang = two.language_cer()
    assert lang["rus"] > 0 and lang["deu"] == 0 and "eng" in base.language_cer()
    # the published rows are there, marked as real-data numbers
    assert "22.9" in text and "REAL data" in text and "17.99" in text
    # stage times: the last run of a stage counts; the chains' stages are shown after their range, not added
    assert "| 1 | corpus | 80 |" in text and "| | total | 189 |" in text
    assert ("| 4-5 | chains | 100 |\n| 4 | finetune (chain step0) | (70) |\n| 5 | step1 (chain ssl) | (60) |\n"
            "| 5 | step1 (chain step0) | (30) |") in text
    assert "| step1_step0 | 0.100 | 0.200 | 0.700 | 2 |" in text
    assert "| `twostep` | learned | 500 | 600 | 0.75 | 32.1 | 296.7 |" in text
    png = wd / "per_language_cer.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_scores_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exp").mkdir()
    assert results_cli.main(["--workdir", str(tmp_path)]) == 1
    assert "run stages 10-11" in capsys.readouterr().err
    assert not (tmp_path / "RESULTS.md").exists()


def test_malformed_stage_times_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "stage_times.tsv"
    p.write_text("1\tcorpus\t90\n2\tdata\n")
    with pytest.raises(DataError, match=r"stage_times.tsv:2:"):
        read_stage_times(p)


def test_seed_repeats_are_summarised_not_rows(tmp_path: Path) -> None:
    # seed 0 (the config's) and repeats 1, 2 of both systems; step2_mfcc.seed3 has no run of its own
    wd = _workdir(tmp_path, {
        "step2_baseline": {"a_deu_000001": "HALO WELT", "b_rus_000001": "ПРИВЕТ"},
        "step2_baseline.seed1": {"a_deu_000001": "HALO WELT"},
        "step2_baseline.seed2": {"b_rus_000001": "ПРИВЕТ"},
        "step2_twostep": {"b_rus_000001": "ПРИВЕТ MИР"},
        "step2_twostep.seed1": {"a_deu_000001": "HALLO"},
        "step2_twostep.seed2": {},
        "step2_mfcc.seed3": {"c_spa_000001": ""},
    })
    for key in ("step2_baseline", "step2_twostep"):
        (wd / "exp" / key / "config.yaml").write_text("seed: 0\nmax_epoch: 6\n")
    for key in ("step2_baseline.seed1", "step2_twostep.seed1"):
        (wd / "exp" / key / "config.yaml").write_text("seed: 1\n")
    assert results_cli.main(["--workdir", str(wd)]) == 0
    text = (wd / "RESULTS.md").read_text(encoding="utf-8")
    by_key = {s.key: s for s in collect_systems(wd / "exp")}
    assert [by_key[k].seed for k in ("step2_baseline", "step2_baseline.seed1", "step2_baseline.seed2")] == [0, 1, None]

    main_rows = [line for line in text.split("## The two-step effect")[0].splitlines() if line.startswith("| (")]
    assert [row.split("`")[1] for row in main_rows] == ["step2_baseline", "step2_twostep"]
    assert "(`step2_mfcc.seed3`)" in text, "a repeat without its system's own run is a row"

    import statistics
    base = [by_key[k].ml_cer for k in ("step2_baseline", "step2_baseline.seed1", "step2_baseline.seed2")]
    two = [by_key[k].ml_cer for k in ("step2_twostep", "step2_twostep.seed1", "step2_twostep.seed2")]
    row = next(line for line in text.splitlines() if line.startswith("| `step2_baseline` |"))
    assert f"| 0, 1, ? | {base[0]:.2f}, {base[1]:.2f}, {base[2]:.2f} |" in row
    assert f"{statistics.mean(base):.2f} ± {statistics.stdev(base):.2f}" in row
    rel = relative_reduction(statistics.mean(base), statistics.mean(two))
    paired = sorted(relative_reduction(b, t) for b, t in zip(base[:2], two[:2]))  # seeds 0 and 1 known on both
    line = next(line for line in text.splitlines() if line.startswith("- Two-step vs single-layer units, mean ML"))
    assert f"({rel:.1f} % relative)" in line
    assert f"2 pairs): {paired[0]:.1f} to {paired[1]:.1f} % relative" in line
    # the wall-time table can come from a kept copy of the default run's stage times
    (wd / "log").mkdir()
    (wd / "log/stage_times.tsv").write_text("9\tstep2\t2789\n")
    (tmp_path / "default_run.tsv").write_text("9\tstep2\t1398\n")
    assert results_cli.main(["--workdir", str(wd), "--stage_times", str(tmp_path / "default_run.tsv")]) == 0
    assert "| 9 | step2 | 1398 |" in (wd / "RESULTS.md").read_text(encoding="utf-8")
