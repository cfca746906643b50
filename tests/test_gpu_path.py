"""The GPU path's code on the CPU: training.amp (bf16 autocast runs on the CPU; fp16's
scaler only on CUDA), training.channels_last, and training.deterministic's settings."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_raw

from mtlkit import ConfigError, Engine, UsageError, load_config
from mtlkit.training.fit import autocast_dtype, build_fit_objects
from mtlkit.training.seeding import algorithm_choice

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_amp_settings_choose_the_autocast_dtype():
    assert autocast_dtype(False, CUDA) is None
    assert autocast_dtype(True, CUDA, bf16_supported=True) is torch.bfloat16
    assert autocast_dtype(True, CUDA, bf16_supported=False) is torch.float16
    assert autocast_dtype(True, CPU) is None  # true meant "on CUDA" before bf16 came
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    assert autocast_dtype("fp16", CUDA) is torch.float16
    with pytest.raises(UsageError, match="fp16, which needs a CUDA device.*use bf16"):
        autocast_dtype("fp16", CPU)


def test_amp_accepts_booleans_and_the_two_dtypes_only():
    for value in (False, True, "bf16", "fp16"):
        raw = tiny_raw()
        raw["training"]["amp"] = value
        assert load_config(raw).training.amp == value
    raw = tiny_raw()
    raw["training"]["amp"] = "fp32"
    with pytest.raises(ConfigError, match="training.amp"):
        load_config(raw)


def fit_objects(**training):
    raw = tiny_raw()
    raw["training"].update(training)
    engine = Engine(load_config(raw))
    cfg = engine.config.training
    return engine, build_fit_objects(engine.build_model(), engine.components, cfg, 0, CPU)


def test_only_fp16_gets_a_gradient_scaler():
    _, bf16 = fit_objects(amp="bf16")
    assert bf16.autocast is torch.bfloat16 and not bf16.scaler.is_enabled()
    _, plain = fit_objects(amp=False)
    assert plain.autocast is None and not plain.scaler.is_enabled()


def test_a_bf16_fit_trains_in_bf16_and_keeps_float32_weights():
    raw = tiny_raw()
    raw["training"].update(amp="bf16", epochs=1)
    engine = Engine(load_config(raw))
    seen = []
    result = engine.fit()
    head = next(iter(engine.model.heads.values()))
    handle = head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engine.model(torch.zeros(2, 1, 32, 32))
    handle.remove()
    assert seen == [torch.bfloat16]  # the linear layers run in bf16 under autocast
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())
    assert math.isfinite(result.history[0].train_loss)


def test_channels_last_trains_the_same_model_up_to_rounding():
    _, objects = fit_objects(channels_last=True)
    kernels = [p for p in objects.model.parameters() if p.ndim == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    results = {}
    for layout in (False, True):
        raw = tiny_raw()
        raw["training"].update(channels_last=layout, epochs=1)
        engine = Engine(load_config(raw))
        results[layout] = engine.fit().history[0].train_loss
    assert results[True] == pytest.approx(results[False], rel=1e-3)


def test_determinism_settings_hold_for_the_fit_and_are_put_back():
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with algorithm_choice(True, CUDA):
        assert not cudnn.benchmark and cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
    with algorithm_choice(False, CUDA):
        assert cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    with algorithm_choice(False, CPU):
        assert not cudnn.benchmark  # nothing to tune on a CPU
    assert (cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
