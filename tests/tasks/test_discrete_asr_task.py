"""DiscreteASRTask: its own registries, the step-2 configs (they parse and build) and the decode configs.

Training, strict loading and decoding on a fake unit dump are exercised through run.sh in
tests/test_step2.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from espnet2_ext.tasks import discrete_asr as ours
from espnet2_ext.tasks.discrete_asr import DiscreteASRTask
from tests.configs import learning_rates

CONF = Path(__file__).resolve().parents[2] / "conf"
STEP2_CONFIGS = sorted((CONF / "step2").glob("*.yaml"))
DECODE_CONFIGS = sorted((CONF / "decode").glob("step2_*.yaml"))


def test_registries_copy_espnets_mt_registries_without_changing_them() -> None:
    from espnet2.tasks import mt as espnet_mt

    for mine, theirs in zip(DiscreteASRTask.class_choices_list, espnet_mt.MTTask.class_choices_list):
        assert mine is not theirs and mine.name == theirs.name
        assert mine.classes.items() >= theirs.classes.items()
    assert ours.model_choices.default == "discrete_asr"
    assert espnet_mt.model_choices.default == "mt", "ESPnet's own registry is left alone"
    args = DiscreteASRTask.get_parser().parse_args([])
    assert args.model == "discrete_asr"


def test_build_model_reads_our_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from espnet2.tasks import mt as espnet_mt

    # an encoder only OUR registry knows must build: the task does not read ESPnet's module-level one
    monkeypatch.setitem(ours.encoder_choices.classes, "mine", espnet_mt.encoder_choices.get_class("transformer"))
    args = DiscreteASRTask.get_parser().parse_args(
        ["--token_list", "a", "--src_token_list", "b", "--encoder", "mine", "--decoder", "transformer"]
    )
    args.token_list, args.src_token_list = ["<blank>", "<unk>", "x", "<sos/eos>"], ["<blank>", "<unk>", "u"]
    args.encoder_conf = {"output_size": 8, "attention_heads": 2, "linear_units": 8, "num_blocks": 1}
    args.decoder_conf = {"attention_heads": 2, "linear_units": 8, "num_blocks": 1}
    args.frontend_conf = {"embed_dim": 8}
    model = DiscreteASRTask.build_model(args)
    assert type(model.encoder).__name__ == "TransformerEncoder" and model.ctc is not None
    assert "mine" not in espnet_mt.encoder_choices.classes


def test_source_vocabulary_is_required() -> None:
    args = DiscreteASRTask.get_parser().parse_args(["--token_list", "a"])
    args.token_list = ["<blank>", "x", "<sos/eos>"]
    with pytest.raises(ValueError, match="--src_token_list"):
        DiscreteASRTask.build_model(args)


SCHEDULED_CONFIGS = [c for c in STEP2_CONFIGS if yaml.safe_load(c.read_text(encoding="utf-8")).get("scheduler")]


@pytest.mark.parametrize("config", SCHEDULED_CONFIGS, ids=lambda p: p.name)
def test_step2_learning_rate_schedules_build_and_peak_at_the_configured_rate(config: Path) -> None:
    args = DiscreteASRTask.get_parser().parse_args(["--config", str(config)])
    rates = learning_rates(args, 40000)  # every update of the longest schedule (the challenge's 30k warm-up)
    assert max(rates) == pytest.approx(args.optim_conf["lr"]), "the warm-up reaches the configured rate"
    assert rates[0] < 0.2 * args.optim_conf["lr"] and rates[-1] < 0.9 * max(rates), "from below, then decays"


@pytest.mark.parametrize("config", STEP2_CONFIGS, ids=lambda p: p.name)
def test_step2_configs_parse_and_build(config: Path) -> None:
    args = DiscreteASRTask.get_parser().parse_args(["--config", str(config)])  # a misspelt key is an error
    # the challenge's CTC weight; the demo, decoded by its CTC branch, weights CTC higher (its config says why)
    assert args.model == "discrete_asr" and args.model_conf["ctc_weight"] == (0.9 if config.name == "demo.yaml" else 0.3)
    assert args.src_tokenizer_encode_conf == {"enable_sampling": True, "alpha": 0.1, "nbest_size": -1}
    specaug = args.specaug_conf
    assert args.specaug == "specaug" and specaug["apply_time_mask"]
    assert not specaug["apply_freq_mask"] and not specaug["apply_time_warp"], "time masks only"
    args.token_list = ["<blank>", "<unk>"] + list("abc") + ["<sos/eos>"]
    args.src_token_list = ["<blank>", "<unk>"] + [chr(0x4E00 + i) for i in range(10)] + ["<sos/eos>"]
    model = DiscreteASRTask.build_model(args)
    assert model.ctc is not None and model.specaug is not None


def test_challenge_config_is_the_baselines() -> None:
    args = DiscreteASRTask.get_parser().parse_args(["--config", str(CONF / "step2/challenge.yaml")])
    enc = args.encoder_conf
    assert (args.encoder, enc["num_blocks"], enc["output_size"], enc["input_layer"]) == (
        "e_branchformer",
        12,
        256,
        "conv1d2",
    )
    assert args.frontend_conf["embed_dim"] == 512 and args.model_conf["lsm_weight"] == 0.1
    assert (args.decoder_conf["num_blocks"], args.decoder_conf["linear_units"]) == (6, 2048)
    assert args.optim_conf["lr"] == 5e-4 and args.scheduler_conf["warmup_steps"] == 30000 and args.max_epoch == 100


@pytest.mark.parametrize("config", DECODE_CONFIGS, ids=lambda p: p.name)
def test_decode_configs_parse(config: Path) -> None:
    from espnet2_ext.bin.discrete_asr_inference import get_parser

    args = get_parser().parse_args(
        ["--config", str(config), "--output_dir", "o", "--data_path_and_name_and_type", "t,src_text,text"]
    )
    assert isinstance(args, argparse.Namespace) and args.lm_weight == 0.0
    if config.name == "step2_demo.yaml":  # the demo decodes by the CTC branch's best path (the config says why)
        assert (args.beam_size, args.ctc_weight) == (1, 1.0)
    else:  # joint CTC/attention beam search with the challenge's CTC weight
        assert args.ctc_weight == 0.3 and args.beam_size >= 5
