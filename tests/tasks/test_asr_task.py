"""ASRTask end to end on a tiny corpus: ESPnet's real collect_stats, training, rebuilding and decoding.

One module-scoped corpus (12 random-noise utterances, char text, a 2-layer SSL checkpoint) and two
in-process training runs, shared by the tests: step 1 (``conf/step1/tiny.yaml``: frozen upstream,
weighted sum, 2 epochs) and step 0 (``conf/tuning/train_step0_tiny.yaml``: trainable upstream, last
layer, CTC head, 1 epoch).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2_ext.bin import asr_inference, asr_train
from espnet2_ext.frontend import SSLFrontend
from espnet2_ext.ssl import SSLUpstream, UpstreamSpec
from espnet2_ext.ssl.checkpoints import write_tiny_hf_wav2vec2
from espnet2_ext.tasks import asr as our_asr
from espnet2_ext.tasks.asr import ASRTask

TEXTS = ["ab", "ba ab", "abc", "cab", "bac", "a b c", "cc", "bb a", "ca", "acb", "ba", "abcab"]
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"]
UPSTREAM_PREFIX = "frontend.upstream."
CONF = Path(__file__).resolve().parents[2] / "conf"
STEP1_TINY = CONF / "step1" / "tiny.yaml"
STEP0_TINY = CONF / "tuning" / "train_step0_tiny.yaml"

# ESPnet's trainer and model still call torch.cuda.amp.autocast; CTC-only runs have no accuracy to report
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch.cuda.amp.autocast\(args...\)` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:No valid stats found:UserWarning"),
]


@dataclasses.dataclass
class Corpus:
    root: Path
    spec: dict
    tokens: Path
    stats: Path

    def data(self, split: str) -> Path:
        return self.root / "data" / split

    def common_args(self, config: Path) -> list[str]:
        args = ["--config", str(config), "--ngpu", "0", "--num_workers", "0"]
        args += ["--token_type", "char", "--token_list", str(self.tokens), "--use_preprocessor", "true"]
        for mode, split in (("train", "train"), ("valid", "valid")):
            args += [f"--{mode}_data_path_and_name_and_type", f"{self.data(split)}/wav.scp,speech,sound"]
            args += [f"--{mode}_data_path_and_name_and_type", f"{self.data(split)}/text,text,text"]
        return args

    def train(self, name: str, config: Path, max_epoch: int) -> Path:
        """Train with ``config`` and this corpus' SSL model; returns the output dir."""
        out = self.root / "exp" / name
        args = self.common_args(config) + ["--frontend_conf", f"upstream.path={self.spec['path']}"]
        for mode in ("train", "valid"):
            args += [f"--{mode}_shape_file", f"{self.stats}/{mode}/speech_shape"]
            args += [f"--{mode}_shape_file", f"{self.stats}/{mode}/text_shape"]
        asr_train.main(
            args
            + ["--fold_length", "80000", "--fold_length", "150", "--max_epoch", str(max_epoch)]
            + ["--use_amp", "false", "--use_tensorboard", "false", "--use_matplotlib", "false"]
            + ["--seed", "0", "--output_dir", str(out)]
            # float32 (the configs say bfloat16, tests/tasks/test_cpu_amp.py covers it): the trained model
            # object is compared with one rebuilt from its files, and ESPnet's relative positional
            # encoding keeps its table (not in the checkpoint) in the dtype of the last forward
            + ["--cpu_amp_dtype", "none"]
        )
        return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("asr_task")
    rng = np.random.default_rng(0)
    for split, utts in (("train", range(9)), ("valid", range(9, 12))):
        data = root / "data" / split
        data.mkdir(parents=True)
        scp, text = [], []
        for i in utts:
            wav = root / "wav" / f"utt{i:02d}.wav"
            wav.parent.mkdir(exist_ok=True)
            soundfile.write(wav, 0.1 * rng.standard_normal(int(rng.integers(4000, 10000))), 16000, subtype="PCM_16")
            scp.append(f"utt{i:02d} {wav}\n")
            text.append(f"utt{i:02d} {TEXTS[i]}\n")
        (data / "wav.scp").write_text("".join(scp), encoding="utf-8")
        (data / "text").write_text("".join(text), encoding="utf-8")
    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    spec = UpstreamSpec.from_path(write_tiny_hf_wav2vec2(root / "ssl", num_layers=2)).to_dict()
    corpus = Corpus(root=root, spec=spec, tokens=tokens, stats=root / "stats")
    keys = [
        "--train_shape_file",
        f"{corpus.data('train')}/wav.scp",
        "--valid_shape_file",
        f"{corpus.data('valid')}/wav.scp",
    ]
    asr_train.main(
        corpus.common_args(STEP1_TINY)
        + ["--frontend_conf", f"upstream.path={spec['path']}", "--collect_stats", "true", *keys]
        + ["--output_dir", str(corpus.stats)]
    )
    return corpus


@dataclasses.dataclass
class Run:
    out: Path
    model: torch.nn.Module  # the model object the trainer trained (weights of the last epoch)
    frontend_calls: list[dict]  # what SSLFrontend.forward saw, call by call


@pytest.fixture(scope="module")
def frozen_run(corpus: Corpus) -> Run:
    """Step 1: frozen upstream, learnable weighted sum, 2 epochs; records every frontend call."""
    calls: list[dict] = []
    built: list[torch.nn.Module] = []
    original_forward, original_build = SSLFrontend.forward, ASRTask.build_model

    def recording_forward(self: SSLFrontend, input: torch.Tensor, input_lengths: torch.Tensor):
        ssl_model = self.upstream.upstream
        calls.append(
            {
                "frontend_training": self.training,
                "ssl_modules_training": [m.training for m in ssl_model.modules()],
                "dropouts": sum(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in ssl_model.modules()),
                "ssl_requires_grad": any(p.requires_grad for p in ssl_model.parameters()),
            }
        )
        return original_forward(self, input, input_lengths)

    def capturing_build(cls, args: argparse.Namespace):
        model = original_build(args)
        built.append(model)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SSLFrontend, "forward", recording_forward)
        mp.setattr(ASRTask, "build_model", classmethod(capturing_build))
        out = corpus.train("frozen", STEP1_TINY, max_epoch=2)
    return Run(out=out, model=built[-1], frontend_calls=calls)


@pytest.fixture(scope="module")
def initial_upstream(corpus: Corpus) -> dict[str, torch.Tensor]:
    """The SSL checkpoint's tensors, under the names they have in the ASR model."""
    upstream = SSLUpstream(UpstreamSpec.from_dict(corpus.spec))
    return {UPSTREAM_PREFIX + k: v for k, v in upstream.state_dict().items()}


@pytest.fixture(scope="module")
def trainable_run(corpus: Corpus) -> Path:
    """Step 0: the upstream itself is fine-tuned with CTC on its last layer, 1 epoch."""
    return corpus.train("trainable", STEP0_TINY, max_epoch=1)


def _batch(corpus: Corpus) -> tuple[torch.Tensor, torch.Tensor]:
    wavs = [
        torch.from_numpy(soundfile.read(line.split()[1], dtype="float32")[0])
        for line in (corpus.data("valid") / "wav.scp").read_text().splitlines()
    ]
    lens = torch.tensor([len(w) for w in wavs])
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lens


# ------------------------------------------------------------------ registries
def test_registries_extend_espnet_without_changing_it() -> None:
    from espnet2.tasks import asr as espnet_asr

    assert our_asr.frontend_choices.get_class("ssl") is SSLFrontend
    assert "ssl" not in espnet_asr.frontend_choices.classes, "ESPnet's own registry is left alone"
    assert our_asr.frontend_choices.classes.items() >= espnet_asr.frontend_choices.classes.items()
    for ours, theirs in zip(ASRTask.class_choices_list, espnet_asr.ASRTask.class_choices_list):
        assert ours.name == theirs.name and ours.default == theirs.default
        assert ours.classes.items() >= theirs.classes.items()
    args = asr_train.get_parser().parse_args(["--frontend", "ssl", "--frontend_conf", "upstream.name=xls_r_300m"])
    assert args.frontend == "ssl" and args.frontend_conf == {"upstream": {"name": "xls_r_300m"}}


# ------------------------------------------------------------------ step 1: frozen upstream
def test_frozen_checkpoints_hold_layer_weights_and_no_upstream(corpus: Corpus, frozen_run: Run) -> None:
    for name in ("1epoch.pth", "2epoch.pth", "valid.loss.best.pth", "checkpoint.pth", "config.yaml"):
        assert (frozen_run.out / name).exists(), name
    state = torch.load(frozen_run.out / "2epoch.pth", map_location="cpu", weights_only=True)
    assert "frontend.layer_weights" in state and state["frontend.layer_weights"].shape == (3,)
    assert not [k for k in state if k.startswith(UPSTREAM_PREFIX)]
    assert any(k.startswith("encoder.") for k in state) and any(k.startswith("ctc.") for k in state)
    assert not torch.equal(state["frontend.layer_weights"], torch.zeros(3)), "training moved the layer weights"
    resume = torch.load(frozen_run.out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert not [k for k in resume["model"] if k.startswith(UPSTREAM_PREFIX)]
    config = yaml.safe_load((frozen_run.out / "config.yaml").read_text())
    assert config["frontend"] == "ssl" and config["frontend_conf"]["upstream"] == corpus.spec
    assert config["token_list"] == TOKENS, "token_list is stored in config.yaml (portable)"


def test_frozen_upstream_is_in_eval_mode_without_gradients_in_every_training_step(frozen_run: Run) -> None:
    steps = [c for c in frozen_run.frontend_calls if c["frontend_training"]]
    assert len(steps) == 2 * 3, "2 epochs x 3 mini-batches of 4 (9 utterances)"
    assert steps[0]["dropouts"] > 0, "the SSL model has dropout that training mode would switch on"
    for step in steps:
        assert not any(step["ssl_modules_training"]), "dropout active in the frozen upstream"
        assert not step["ssl_requires_grad"], "the frozen upstream must get no gradients"


def test_rebuilding_from_config_gives_the_trained_models_output(corpus: Corpus, frozen_run: Run) -> None:
    model, args = ASRTask.build_model_from_file(frozen_run.out / "config.yaml", frozen_run.out / "2epoch.pth")
    assert isinstance(model.frontend, SSLFrontend) and model.frontend.freeze_upstream
    assert args.frontend == "ssl"
    speech, lens = _batch(corpus)
    with torch.no_grad():
        expected, expected_lens = frozen_run.model.eval().encode(speech, lens)
        got, got_lens = model.eval().encode(speech, lens)
    assert torch.equal(got_lens, expected_lens)
    torch.testing.assert_close(got, expected)


def test_loading_is_strict_except_for_the_frozen_upstream(frozen_run: Run, tmp_path: Path) -> None:
    state = torch.load(frozen_run.out / "2epoch.pth", map_location="cpu", weights_only=True)
    config = frozen_run.out / "config.yaml"
    incomplete = dict(state)
    del incomplete["frontend.layer_weights"]
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"1 missing tensor\(s\) \['frontend.layer_weights'\]"):
        ASRTask.build_model_from_file(config, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"1 unexpected tensor\(s\) \['encoder.extra'\]"):
        our_asr.load_state_dict_checked(copy.deepcopy(frozen_run.model), {**state, "encoder.extra": torch.zeros(1)})


def test_espnets_own_task_cannot_build_the_config(frozen_run: Run) -> None:
    from espnet2.tasks.asr import ASRTask as EspnetASRTask

    with pytest.raises(ValueError, match="--frontend must be one of"):
        EspnetASRTask.build_model_from_file(frozen_run.out / "config.yaml")


def test_inference_rebuilds_through_our_task(corpus: Corpus, frozen_run: Run, tmp_path: Path) -> None:
    from espnet2.bin import asr_inference as espnet_inference

    model_file = frozen_run.out / "valid.loss.best.pth"
    speech2text = asr_inference.Speech2Text(
        frozen_run.out / "config.yaml", model_file, ctc_weight=1.0, beam_size=2, device="cpu"
    )
    assert isinstance(speech2text.asr_model.frontend, SSLFrontend)
    speech, lens = _batch(corpus)
    text, tokens, token_ids, _ = speech2text(speech[0, : lens[0]])[0]
    assert set(tokens) <= set(TOKENS)
    assert espnet_inference.ASRTask is not ASRTask, "ESPnet's module is restored afterwards"

    out = tmp_path / "decode"
    asr_inference.main(
        ["--ngpu", "0", "--num_workers", "0", "--beam_size", "2", "--ctc_weight", "1.0", "--output_dir", str(out)]
        + ["--data_path_and_name_and_type", f"{corpus.data('valid')}/wav.scp,speech,sound"]
        + ["--asr_train_config", str(frozen_run.out / "config.yaml"), "--asr_model_file", str(model_file)]
    )
    hyps = (out / "1best_recog" / "token").read_text().splitlines()
    assert [h.split()[0] for h in hyps] == ["utt09", "utt10", "utt11"]
    assert espnet_inference.ASRTask is not ASRTask


def test_beam_1_ctc_only_decodes_the_best_path(corpus: Corpus, frozen_run: Run) -> None:
    config, model_file = frozen_run.out / "config.yaml", frozen_run.out / "valid.loss.best.pth"
    speech2text = asr_inference.Speech2Text(config, model_file, ctc_weight=1.0, beam_size=1, device="cpu")
    assert speech2text.best_path
    speech, lens = _batch(corpus)
    for i, n in enumerate(lens.tolist()):
        text, tokens, token_ids, _ = speech2text(speech[i, :n])[0]
        with torch.no_grad():
            enc, _ = speech2text.asr_model.encode(speech[i : i + 1, :n], lens[i : i + 1])
        frames = speech2text.asr_model.ctc.argmax(enc)[0].tolist()
        expected = [k for k, _ in itertools.groupby(frames) if k != 0]  # merge repeats, drop blanks
        assert token_ids == expected and tokens == [TOKENS[k] for k in expected]
    searched = asr_inference.Speech2Text(config, model_file, ctc_weight=1.0, beam_size=2, device="cpu")
    assert not searched.best_path, "a beam keeps ESPnet's search"


# ------------------------------------------------------------------ step 0: trainable upstream
def test_trainable_upstream_is_saved_and_changed_by_training(
    trainable_run: Path, initial_upstream: dict[str, torch.Tensor]
) -> None:
    state = torch.load(trainable_run / "1epoch.pth", map_location="cpu", weights_only=True)
    initial = initial_upstream
    assert {k for k in state if k.startswith(UPSTREAM_PREFIX)} == set(initial)
    assert "frontend.layer_weights" not in state
    layers = [k for k in initial if ".encoder.layers." in k and k.endswith(".weight")]
    changed = [k for k in layers if not torch.equal(state[k], initial[k])]
    assert layers and changed == layers, "training changed every transformer layer"
    convs = [k for k in initial if ".feature_extractor." in k]
    assert convs and all(torch.equal(state[k], initial[k]) for k in convs), "the conv extractor stays frozen"
    model, _ = ASRTask.build_model_from_file(None, trainable_run / "1epoch.pth")  # finds config.yaml
    assert not model.frontend.freeze_upstream
    torch.testing.assert_close(model.state_dict()[layers[0]], state[layers[0]])


def test_init_keeps_the_pretrained_ssl_weights(trainable_run: Path, initial_upstream: dict[str, torch.Tensor]) -> None:
    args = argparse.Namespace(**yaml.safe_load((trainable_run / "config.yaml").read_text()))
    args.init = "xavier_uniform"  # ESPnet's --init: re-initialises every parameter of the model
    state = ASRTask.build_model(args).state_dict()
    assert all(torch.equal(state[k], v) for k, v in initial_upstream.items())
