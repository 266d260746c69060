"""--cpu_amp_dtype (espnet2_ext.tasks.cpu_amp): the model's forward under CPU autocast, nothing else changed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from espnet2_ext.tasks import cpu_amp
from espnet2_ext.tasks.discrete_asr import DiscreteASRTask


def _tiny_model_args(*options: str) -> argparse.Namespace:
    args = DiscreteASRTask.get_parser().parse_args(
        ["--token_list", "a", "--src_token_list", "b", "--encoder", "transformer", "--decoder", "transformer", *options])
    args.token_list, args.src_token_list = ["<blank>", "<unk>", "x", "y", "<sos/eos>"], ["<blank>", "<unk>", "u", "v"]
    args.encoder_conf = {"output_size": 8, "attention_heads": 2, "linear_units": 8, "num_blocks": 1, "input_layer": "linear"}
    args.decoder_conf = {"attention_heads": 2, "linear_units": 8, "num_blocks": 1}
    args.frontend_conf = {"embed_dim": 8}
    return args


def _forward(model: torch.nn.Module) -> tuple[torch.Tensor, set[torch.dtype]]:
    """The loss of a 2-utterance batch and the dtypes the model's Linear layers put out."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    torch.manual_seed(0)
    loss, _, _ = model(src_text=torch.tensor([[2, 3, 2, 3, 2, 3], [3, 2, 3, 2, 0, 0]]),
                       src_text_lengths=torch.tensor([6, 4]),
                       text=torch.tensor([[2, 3], [3, -1]]), text_lengths=torch.tensor([2, 1]))
    for h in hooks:
        h.remove()
    return loss, seen


def test_bfloat16_runs_the_forward_in_bfloat16_and_keeps_float32_parameters_and_gradients() -> None:
    torch.manual_seed(0)
    model = DiscreteASRTask.build_model(_tiny_model_args("--cpu_amp_dtype", "bfloat16"))
    loss, dtypes = _forward(model)
    assert dtypes == {torch.bfloat16}, "every Linear computes in bfloat16"
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.float32}
    assert {p.grad.dtype for p in params if p.grad is not None} == {torch.float32}
    # the checkpoint format is the float32 model's: its state dict loads into a model built without the option
    plain = DiscreteASRTask.build_model(_tiny_model_args())
    plain.load_state_dict(model.state_dict(), strict=True)
    # encode (what decoding calls) is not under autocast
    enc, _ = model.encode(torch.tensor([[2, 3, 2, 3]]), torch.tensor([4]))
    assert enc.dtype == torch.float32


def test_default_and_gpu_runs_leave_the_model_alone() -> None:
    model = DiscreteASRTask.build_model(_tiny_model_args())
    assert "forward" not in vars(model)
    assert _forward(model)[1] == {torch.float32}
    on_gpu = _tiny_model_args("--cpu_amp_dtype", "bfloat16", "--ngpu", "1")  # ESPnet's --use_amp is for GPUs
    assert "forward" not in vars(DiscreteASRTask.build_model(on_gpu))


def test_bad_dtype_is_rejected() -> None:
    with pytest.raises(SystemExit):
        _tiny_model_args("--cpu_amp_dtype", "float16")


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_amp.cpu_has_native_bf16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n")
    assert cpu_amp.cpu_has_native_bf16(info) is False
    assert cpu_amp.cpu_has_native_bf16(tmp_path / "missing") is None
