"""layer_weights.json and its chart: read from a step-1 checkpoint, checked, round-tripped."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

from espnet2_ext.bin import layer_weights as cli
from espnet2_ext.frontend.layer_weights import LayerWeights, plot, read_from_checkpoint
from espnet2_ext.ssl import checkpoint_sha256
from espnet2_ext.utils.fileio import DataError

UPSTREAM = {"name": "hf_wav2vec2_custom", "path": "/models/ssl", "cache_dir": None}
LOGITS = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5], dtype=torch.float32)


def make_run(tmp_path: Path, logits: torch.Tensor = LOGITS, layers: list[int] | None = None,
             num_states: int = 5, **frontend_conf: object) -> tuple[Path, Path, Path]:
    """A step-1 run as stage 5 leaves it: config.yaml, a checkpoint, and the upstream record."""
    conf = {"upstream": UPSTREAM, "freeze_upstream": True, "layer_selection": "weighted", "layers": layers,
            "normalize_layers": True, **frontend_conf}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"frontend": "ssl", "frontend_conf": conf, "encoder": "transformer"}))
    model = tmp_path / "valid.loss.ave.pth"
    torch.save({"frontend.layer_weights": logits, "encoder.embed.0.weight": torch.zeros(2, 2)}, model)
    record = tmp_path / "upstream.json"
    record.write_text(json.dumps({"upstream": UPSTREAM, "sha256": "ab" * 32, "num_hidden_states": num_states}))
    return config, model, record


def test_weights_are_the_checkpoints_softmax_and_sum_to_one(tmp_path: Path) -> None:
    config, model, record = make_run(tmp_path)
    lw = read_from_checkpoint(config, model, record)
    assert sum(lw.weights) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(torch.tensor(lw.weights, dtype=torch.float32), torch.softmax(LOGITS, 0))
    assert lw.logits == pytest.approx(LOGITS.tolist())
    assert (lw.layers, lw.num_hidden_states, lw.normalize_layers) == ([0, 1, 2, 3, 4], 5, True)
    assert lw.upstream == UPSTREAM and lw.upstream_sha256 == "ab" * 32
    assert lw.checkpoint == str(model) and lw.checkpoint_sha256 == checkpoint_sha256(model)


def test_a_layer_subset_gets_zero_weight_elsewhere(tmp_path: Path) -> None:
    config, model, record = make_run(tmp_path, logits=torch.tensor([1.0, 3.0]), layers=[2, 6], num_states=9)
    weights = read_from_checkpoint(config, model, record).weights
    assert len(weights) == 9 and sum(weights) == pytest.approx(1.0)
    assert [i for i, w in enumerate(weights) if w > 0] == [2, 6]
    assert weights[6] / weights[2] == pytest.approx(torch.e ** 2)


def test_json_round_trip_and_schema(tmp_path: Path) -> None:
    config, model, record = make_run(tmp_path)
    lw = read_from_checkpoint(config, model, record)
    lw.write(tmp_path / "layer_weights.json")
    stored = json.loads((tmp_path / "layer_weights.json").read_text())
    assert set(stored) == {"weights", "logits", "layers", "normalize_layers", "num_hidden_states", "upstream",
                           "upstream_sha256", "checkpoint", "checkpoint_sha256"}
    assert LayerWeights.read(tmp_path / "layer_weights.json") == lw


def test_an_edited_json_is_rejected(tmp_path: Path) -> None:
    config, model, record = make_run(tmp_path)
    lw = read_from_checkpoint(config, model, record)
    path = tmp_path / "layer_weights.json"
    stored = lw.to_dict()
    stored["weights"] = [0.2] * 5  # sums to 1, but is not softmax(logits)
    path.write_text(json.dumps(stored))
    with pytest.raises(DataError, match="is not the softmax"):
        LayerWeights.read(path)
    del stored["checkpoint"]
    path.write_text(json.dumps(stored))
    with pytest.raises(DataError, match=r"missing key\(s\) \['checkpoint'\]"):
        LayerWeights.read(path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"layer_selection": "last"}, "not a step-1 model"),
        ({"freeze_upstream": False}, "freeze_upstream false"),
        ({"upstream": {**UPSTREAM, "path": "/models/other"}}, "the SSL model changed after training"),
        ({"layers": [0, 1]}, "5 layer-weight logits, but .* sums 2 hidden states"),
    ],
)
def test_mismatched_runs_are_named(tmp_path: Path, change: dict, match: str) -> None:
    config, model, record = make_run(tmp_path, **change)
    with pytest.raises(DataError, match=match) as err:
        read_from_checkpoint(config, model, record)
    assert str(tmp_path) in str(err.value)


def test_missing_checkpoint_lists_the_kept_ones(tmp_path: Path) -> None:
    config, _, record = make_run(tmp_path)
    with pytest.raises(DataError, match=r"3epoch.pth: not found; checkpoints in .*\['valid.loss.ave.pth'\]"):
        read_from_checkpoint(config, tmp_path / "3epoch.pth", record)


def test_cli_writes_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config, model, record = make_run(tmp_path)
    out = tmp_path / "out"
    argv = ["export", "--config", str(config), "--model_file", str(model), "--upstream_json", str(record),
            "--out_json", str(out / "layer_weights.json"), "--out_png", str(out / "layer_weights.png")]
    assert cli.main(argv) == 0
    assert LayerWeights.read(out / "layer_weights.json").weights == read_from_checkpoint(config, model, record).weights
    image = matplotlib.image.imread(out / "layer_weights.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in out.iterdir()) == ["layer_weights.json", "layer_weights.png"], "no temp files left"
    argv[argv.index("--upstream_json") + 1] = str(tmp_path / "missing.json")
    assert cli.main(argv) == 1
    assert "missing.json: not an upstream record" in capsys.readouterr().err


def test_chart_title_names_upstream_and_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    titles: list[str] = []
    original = plt.Axes.set_title
    monkeypatch.setattr(plt.Axes, "set_title", lambda self, label, *a, **k: titles.append(label)
                        or original(self, label, *a, **k))
    config, model, record = make_run(tmp_path)
    lw = read_from_checkpoint(config, model, record)
    plot(lw, tmp_path / "chart.png")
    assert titles and "hf_wav2vec2_custom" in titles[0] and "/models/ssl" in titles[0]
    assert "valid.loss.ave.pth" in titles[0] and lw.checkpoint_sha256[:12] in titles[0]
