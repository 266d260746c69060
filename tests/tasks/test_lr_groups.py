"""--layer_weights_lr_scale and --upstream_lr_scale: the layer-weight logits and the fine-tuned SSL model in optimiser groups of their own."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from espnet2.tasks.abs_task import scheduler_classes

from espnet2_ext.ssl import UpstreamSpec
from espnet2_ext.ssl.checkpoints import write_tiny_hf_wav2vec2
from espnet2_ext.tasks.asr import ASRTask
from espnet2_ext.tasks.lr_groups import LAYER_WEIGHTS_PARAM, UPSTREAM_PREFIX

CONF = Path(__file__).resolve().parents[2] / "conf"
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return UpstreamSpec.from_path(write_tiny_hf_wav2vec2(tmp_path_factory.mktemp("ssl") / "hf", num_layers=2)).to_dict()


def parse(spec: dict, *extra: str, step: str = "step1") -> argparse.Namespace:
    """Options of the tiny step-1 (or step-0) config plus ``extra``."""
    args = ASRTask.get_parser().parse_args(
        ["--config", str(CONF / step / "tiny.yaml"), "--frontend_conf", f"upstream.path={spec['path']}", *extra]
    )
    args.token_list = list(TOKENS)
    return args


def one_step(spec: dict, *extra: str, step: str = "step1"
             ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.optim.Optimizer]:
    """Build model and optimiser from the tiny step-1 (or step-0) config, take one update; returns the weights before."""
    torch.manual_seed(0)
    args = parse(spec, *extra, step=step)
    model = ASRTask.build_model(args)
    (optim,) = ASRTask.build_optimizers(args, model)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    speech = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    loss, _, _ = model(speech=speech, speech_lengths=torch.tensor([8000, 6000]),
                       text=torch.tensor([[3, 4, 5], [4, 3, -1]]), text_lengths=torch.tensor([3, 2]))
    loss.backward()
    optim.step()
    return model, before, optim


def test_default_is_espnets_single_group(spec: dict) -> None:
    args = parse(spec, "--layer_weights_lr_scale", "1.0")
    (optim,) = ASRTask.build_optimizers(args, ASRTask.build_model(args))
    assert len(optim.param_groups) == 1 and optim.param_groups[0]["lr"] == args.optim_conf["lr"]


def test_scaled_logits_take_scaled_adam_steps(spec: dict) -> None:
    model, before, optim = one_step(spec, "--layer_weights_lr_scale", "20", "--optim_conf", "weight_decay=0.1")
    lr = optim.defaults["lr"]
    assert [g["lr"] for g in optim.param_groups] == [lr, pytest.approx(20 * lr)]
    assert optim.param_groups[1]["weight_decay"] == 0.0 and optim.param_groups[0]["weight_decay"] == 0.1
    params = dict(model.named_parameters())
    assert optim.param_groups[1]["params"] == [params[LAYER_WEIGHTS_PARAM]]
    # Adam's first step moves every parameter with a gradient by its rate (times the sign)
    moved = (params[LAYER_WEIGHTS_PARAM] - before[LAYER_WEIGHTS_PARAM]).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, 20 * lr), rtol=1e-3, atol=0)
    encoder = [k for k in before if k.startswith("encoder.") and k.endswith(".weight")]
    step = max((params[k] - before[k]).abs().max().item() for k in encoder)
    assert step == pytest.approx(lr, rel=1e-2), "the rest of the model keeps the configured rate"


def test_schedulers_scale_both_groups_alike(spec: dict) -> None:
    args = parse(spec, "--layer_weights_lr_scale", "10")
    (optim,) = ASRTask.build_optimizers(args, ASRTask.build_model(args))
    scheduler = scheduler_classes["tristagelr"](optim, max_steps=100, warmup_ratio=0.1, hold_ratio=0.4,
                                                decay_ratio=0.5, init_lr_scale=0.01, final_lr_scale=0.05)
    for _ in range(60):
        optim.step()
        scheduler.step()
        encoder_lr, weights_lr = (g["lr"] for g in optim.param_groups)
        assert weights_lr == pytest.approx(10 * encoder_lr)
    assert encoder_lr < args.optim_conf["lr"], "the schedule reached its decay"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--layer_weights_lr_scale", "0"], "must be positive"),
        (["--upstream_lr_scale", "-1"], "upstream_lr_scale must be positive"),
        (["--layer_weights_lr_scale", "2", "--frontend_conf", "layer_selection=last"], "has no frontend.layer_weights"),
        (["--layer_weights_lr_scale", "2", "--exclude_weight_decay", "true"], "cannot be combined"),
    ],
)
def test_bad_uses_are_rejected(spec: dict, extra: list[str], match: str) -> None:
    args = parse(spec, *extra)
    with pytest.raises(ValueError, match=match):
        ASRTask.build_optimizers(args, ASRTask.build_model(args))


def test_collect_stats_builds_without_the_frontend(spec: dict) -> None:
    # stage 5's shape collection builds the model with --input_size 1 (no frontend, no logits)
    args = parse(spec, "--layer_weights_lr_scale", "20", "--input_size", "1", "--collect_stats", "true")
    (optim,) = ASRTask.build_optimizers(args, ASRTask.build_model(args))
    assert len(optim.param_groups) == 1


def test_fine_tuned_upstream_learns_at_its_scaled_rate_and_the_head_at_the_configured_one(spec: dict) -> None:
    model, before, optim = one_step(spec, "--upstream_lr_scale", "0.1", step="step0")
    lr = optim.defaults["lr"]
    assert [g["lr"] for g in optim.param_groups] == [lr, pytest.approx(0.1 * lr)]
    params = dict(model.named_parameters())
    upstream = {k for k in before if k.startswith(UPSTREAM_PREFIX)}
    in_group = {id(p) for p in optim.param_groups[1]["params"]}
    assert upstream and all(id(params[k]) in in_group for k in upstream)
    assert any(k.startswith("ctc.") for k in params) and not any(id(params[k]) in in_group for k in params
                                                                  if not k.startswith(UPSTREAM_PREFIX))
    # Adam's first step moves every parameter with a gradient by its rate
    head = max((params[k] - before[k]).abs().max().item() for k in before if k.startswith("ctc."))
    ssl = max((params[k] - before[k]).abs().max().item() for k in upstream)
    assert head == pytest.approx(lr, rel=1e-2) and ssl == pytest.approx(0.1 * lr, rel=1e-2)


def test_upstream_scale_needs_a_trainable_upstream(spec: dict) -> None:
    args = parse(spec, "--upstream_lr_scale", "0.1")  # step 1: the upstream is frozen
    with pytest.raises(ValueError, match="no trainable frontend.upstream"):
        ASRTask.build_optimizers(args, ASRTask.build_model(args))
