"""timm backbones: the feature contract and every form of ``pretrained``."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from mtlkit import UsageError
from mtlkit.plugins import backbones
from mtlkit.plugins.backbones import BackboneOptions, TimmOptions, timm_backbone


def options(**values) -> TimmOptions:
    return TimmOptions.model_validate({"model": "resnet10t", **values})


@pytest.mark.parametrize("model", ["resnet10t", "mobilenetv3_small_050"])
def test_backbone_returns_pooled_features_of_the_declared_width(model):
    net = timm_backbone(options(model=model))
    from mtlkit.plugins.heads import BMHead, BMOptions
    from mtlkit.training.model import MultiTaskModel

    multi = MultiTaskModel(net, [BMHead(BMOptions())])
    out = multi(torch.zeros(2, 1, 32, 32))
    assert out["bm"].shape == (2, 1)


def test_unknown_timm_model_is_an_error_with_similar_names():
    with pytest.raises(ValueError, match="timm has no model 'resnet10'; did you mean .*resnet10t"):
        options(model="resnet10")


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        options(pretrained=str(tmp_path / "nope.safetensors"))


def _reference_state(in_chans: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = timm.create_model("resnet10t", num_classes=10, in_chans=in_chans)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_local_safetensors_weights_are_loaded_and_the_classifier_dropped(tmp_path):
    state = _reference_state(in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    net = timm_backbone(options(pretrained=str(path)))
    loaded = net.state_dict()
    key = "layer1.0.conv1.weight"
    assert torch.equal(loaded[key], state[key])
    assert not any(k.startswith("fc.") for k in loaded)


def test_three_channel_weights_are_adapted_to_grayscale(tmp_path):
    state = _reference_state(in_chans=3)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    net = timm_backbone(options(pretrained=str(path), in_chans=1))
    first = next(k for k, v in state.items() if v.ndim == 4)
    assert net.state_dict()[first].shape[1] == 1
    # timm adapts RGB filters to one channel by summing them
    assert torch.allclose(net.state_dict()[first][:, 0], state[first].sum(dim=1), atol=1e-5)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": _Exploit(marker)}))
    with pytest.raises(UsageError, match="safely"):
        timm_backbone(options(pretrained=str(path)))
    assert not marker.exists()


def test_weights_for_another_architecture_are_an_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(path))
    with pytest.raises(UsageError, match="does not fit"):
        timm_backbone(options(pretrained=str(path)))


def test_failed_download_is_a_clear_error(monkeypatch):
    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return timm.create_model(name, **kwargs)

    monkeypatch.setattr(backbones.timm, "create_model", offline)
    with pytest.raises(UsageError, match="local file"):
        timm_backbone(options(pretrained=True))


def test_resnet50_preset_has_no_model_option():
    with pytest.raises(ValueError, match="model"):
        BackboneOptions.model_validate({"model": "resnet18"})


def test_weights_with_the_same_keys_but_other_shapes_are_an_error(tmp_path):
    torch.manual_seed(0)
    wider = timm.create_model("resnet14t", num_classes=0, in_chans=1).state_dict()
    path = tmp_path / "resnet14t.safetensors"
    save_file({k: v.contiguous() for k, v in wider.items()}, str(path))
    with pytest.raises(UsageError, match="does not fit"):
        timm_backbone(options(pretrained=str(path)))
