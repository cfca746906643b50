"""Training under torchrun: the pieces in one process (shards, gathering, the sampler, the
launcher), then real 2-process gloo runs on the CPU: outputs written once, metrics against
a single-process run, the gathered metrics against the saved model's, and a rank killed
and resumed under torchrun."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import run_mtl, tiny_raw, write_yaml
from torch.utils.data import RandomSampler

from mtlkit import load_config, run
from mtlkit.cli import main
from mtlkit.cli.launch import launch, torchrun_arguments
from mtlkit.errors import ConfigError, TrainingError, UsageError
from mtlkit.training import distributed
from mtlkit.training.distributed import (
    ShardedSampler,
    from_main,
    gathered,
    join_outputs,
    shard_bounds,
)

# --- the pieces, in one process ------------------------------------------------------------


@pytest.mark.parametrize("total, world", [(10, 3), (2, 4), (0, 2), (7, 1), (8, 2)])
def test_shards_are_contiguous_and_cover_every_row_once(total, world):
    bounds = shard_bounds(total, world)
    assert len(bounds) == world
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def _outputs(rows: np.ndarray):
    """Outputs of a fake forward: a binary task, a 3-class task, a raw copy and a map."""
    rows = rows.astype(np.float32)
    probs = {"bm": rows / 100, "subtype": np.stack([rows, rows + 1, rows + 2], axis=1)}
    maps = {"seg": np.broadcast_to(rows[:, None, None], (len(rows), 2, 2)).astype(np.float16)}
    return probs, {"bm": rows / 50, "subtype": probs["subtype"] * 2}, maps


@pytest.mark.parametrize("total, world", [(10, 3), (2, 4), (9, 2)])
def test_joined_shards_are_the_outputs_in_row_order(total, world):
    rows = np.arange(100, 100 + total)
    parts = [_outputs(rows[start:stop]) for start, stop in shard_bounds(total, world)]
    probs, raw, maps = join_outputs(parts)
    expected = _outputs(rows)
    for got, want in ((probs, expected[0]), (raw, expected[1]), (maps, expected[2])):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_a_shard_without_raw_outputs_gives_none():
    parts = [(*_outputs(np.arange(3))[:1], None, {}), (*_outputs(np.arange(3, 5))[:1], None, {})]
    probs, raw, maps = join_outputs(parts)
    assert raw is None and maps == {}
    np.testing.assert_array_equal(probs["bm"], np.arange(5, dtype=np.float32) / 100)


def test_with_one_rank_the_sampler_is_randomsamplers_order():
    ours = ShardedSampler(37, 0, 1, torch.Generator().manual_seed(5))
    theirs = RandomSampler(range(37), generator=torch.Generator().manual_seed(5))
    for _epoch in range(3):  # and it reshuffles each epoch the same way
        assert list(ours) == list(theirs)


def test_the_shards_of_an_epoch_are_disjoint_equal_and_cover_every_row():
    size, world = 11, 3
    shards = [
        list(ShardedSampler(size, r, world, torch.Generator().manual_seed(1))) for r in range(3)
    ]
    assert {len(s) for s in shards} == {4}  # padded to equal steps
    assert set().union(*shards) == set(range(size))
    assert len(set(shards[0]) | set(shards[1])) == 8  # ranks 0 and 1 hold no row twice


def test_the_order_is_a_function_of_the_seed_and_reshuffles_each_epoch():
    def epochs(seed: int, n: int = 3):
        sampler = ShardedSampler(20, 1, 2, torch.Generator().manual_seed(seed))
        return [list(sampler) for _ in range(n)]

    assert epochs(3) == epochs(3)
    assert epochs(3) != epochs(4)
    first, second, _ = epochs(3)
    assert first != second


def test_a_restored_generator_continues_the_order_exactly():
    generator = torch.Generator().manual_seed(9)
    sampler = ShardedSampler(15, 0, 2, generator)
    list(sampler)
    saved = generator.get_state()  # what the training state keeps after epoch 1
    expected = [list(sampler), list(sampler)]
    resumed = torch.Generator()
    resumed.set_state(saved)
    again = ShardedSampler(15, 0, 2, resumed)
    assert [list(again), list(again)] == expected


def test_the_sampler_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2"):
        ShardedSampler(10, 2, 2, torch.Generator())


def test_rank_seeds_differ_by_epoch_and_stay_put():
    assert distributed.rank_seed(0, 1) == distributed.rank_seed(0, 1)
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(0, 2)
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(1, 1)


def test_without_a_process_group_everything_is_the_single_process():
    assert not distributed.active()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    assert from_main(lambda: 42) == 42
    rows = torch.arange(5)
    assert gathered(lambda r: (r.tolist(), None, {}), rows) == ([0, 1, 2, 3, 4], None, {})
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu"), True) is model
    distributed.check_same("anything", "the data")  # nothing to compare against


def test_a_session_outside_torchrun_starts_no_group(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with distributed.session(load_config(tiny_raw()).training):
        assert not distributed.active()


def _torchrun_environment(monkeypatch, world: int = 1) -> None:
    """What torchrun sets for rank 0 of ``world``, on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in [("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", world)]:
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))


def test_a_session_under_torchrun_joins_gloo_with_the_timeout_and_leaves(monkeypatch):
    _torchrun_environment(monkeypatch)
    training = load_config(tiny_raw()).training
    training.distributed.timeout = 42
    with distributed.session(training):
        assert distributed.active() and dist.get_backend() == "gloo"
        backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
        assert backend.options._timeout == dt.timedelta(seconds=42)
    assert not distributed.active()


def test_mtl_ablate_is_refused_under_torchrun(monkeypatch, tmp_path, capsys):
    _torchrun_environment(monkeypatch, world=2)
    config = write_yaml(tmp_path / "ablate.yaml", tiny_raw())
    assert main(["ablate", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "not under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def group_of_one(tmp_path):
    """A gloo process group of one rank, in this process."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_group_of_one_gathers_its_own_rows_and_raises_rank_0s_errors(group_of_one):
    assert distributed.active() and distributed.world_size() == 1
    probs, raw, maps = gathered(lambda r: _outputs(r.numpy()), torch.arange(7))
    np.testing.assert_array_equal(probs["bm"], np.arange(7, dtype=np.float32) / 100)

    def refuse():
        raise UsageError("the run directory is not empty")

    with pytest.raises(UsageError, match="not empty"):
        from_main(refuse)

    def invalid():
        raise ConfigError([("training.epochs", "must be positive")])

    with pytest.raises(ConfigError, match="training.epochs: must be positive"):
        from_main(invalid)
    distributed.check_same("fingerprint", "the data's fingerprint")


def test_sync_batchnorm_is_refused_on_the_cpu(group_of_one):
    with pytest.raises(ConfigError, match="sync_batchnorm: needs CUDA"):
        distributed.wrap_model(torch.nn.BatchNorm2d(2), torch.device("cpu"), True)


def test_other_parameters_are_averaged_before_the_step(group_of_one):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    seen = []
    distributed.average_other_gradients(optimizer, [weight])
    optimizer.register_step_pre_hook(lambda *_: seen.append(weight.grad.clone()))
    (weight * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    optimizer.step()
    torch.testing.assert_close(seen[0], torch.tensor([1.0, 2.0, 3.0]))  # one rank: the mean
    torch.testing.assert_close(weight.detach(), torch.tensor([0.0, -1.0, -2.0]))


def test_the_launcher_reruns_the_command_as_torchrun_processes():
    args = torchrun_arguments(3, ["run", "cfg.yaml", "--quiet"])
    assert "--standalone" in args and "--nproc-per-node=3" in args
    assert args[-5:] == ["-m", "mtlkit.cli", "run", "cfg.yaml", "--quiet"]


def test_the_launcher_refuses_bad_counts_and_nesting(monkeypatch):
    with pytest.raises(UsageError, match="at least 1"):
        launch(0, ["run", "cfg.yaml"])
    for name, value in [("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(UsageError, match="inside a torchrun job"):
        launch(2, ["run", "cfg.yaml"])


def test_the_ranks_keep_this_process_thread_setting_and_its_environment_is_put_back(monkeypatch):
    # torchrun would set OMP_NUM_THREADS=1 (one BLAS thread per rank); after the job this
    # process's environment is as it was.
    seen = {}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("torch.distributed.run.run", lambda _args: seen.update(os.environ.copy()))
    assert launch(2, ["run", "cfg.yaml"]) == 0
    assert seen["OMP_NUM_THREADS"] == str(os.cpu_count() or 1)
    assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch(2, ["run", "cfg.yaml"]) == 0
    assert seen["OMP_NUM_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_rank_killed_by_a_signal_is_a_training_error(monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def killed(_args):
        failure = ProcessFailure(local_rank=1, pid=1, exitcode=-9, error_file="<N/A>")
        raise ChildFailedError("mtlkit.cli", {1: failure})

    monkeypatch.setattr("torch.distributed.run.run", killed)
    with pytest.raises(TrainingError, match="rank 1 of 2 was stopped by signal 9"):
        launch(2, ["run", "cfg.yaml"])


# --- two processes with gloo -----------------------------------------------------------------

EPOCHS = 3
PER_RANK = 8  # two ranks of 8 images: the single process's step of 16


def ddp_raw(**training):
    """The tiny config with batch norm (resnet10t) and augmentation, 8 images per rank."""
    raw = tiny_raw(name="ddp", reports=["summary"])
    raw["training"].update(
        {"epochs": EPOCHS, "batch_size": PER_RANK, "optimizer": {"name": "adam", "lr": 0.003}}
    )
    raw["training"].update(training)
    raw["evaluation"]["statistics"] = {"bootstrap_resamples": 0}
    return raw


def exact_raw(**training):
    """Without batch norm (timm's LayerNorm test_convnext) and augmentation: what still
    tells 2 ranks from one process is float summation order alone. The uncertainty
    weighting's learned weights sit outside the DDP model: their gradients are averaged
    by the engine's own hook."""
    raw = ddp_raw(**training)
    raw["weighting"] = "uncertainty"
    # SGD, not Adam: Adam's first steps move by about lr whatever the gradient's size,
    # which would hide gradients that differ between the ranks.
    raw["training"]["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    raw["backbone"]["model"] = "test_convnext"
    raw["training"]["augmentation"] = {"enabled": False}
    raw["training"]["epochs"] = 2
    return raw


def _two_ranks(folder, raw):
    """A run in 2 gloo processes, started by `mtl run --nproc 2`."""
    config = write_yaml(folder / "ddp.yaml", raw)
    out = folder / "two"
    done = run_mtl("run", str(config), "--out", str(out), "--nproc", "2", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _two_ranks(tmp_path_factory.mktemp("ddp"), ddp_raw())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same run in one process, with the same images per step (16)."""
    out = tmp_path_factory.mktemp("ddp1") / "one"
    run(load_config(ddp_raw(batch_size=2 * PER_RANK)), out_dir=out)
    return out


@pytest.mark.slow  # a third torchrun launch (~20-40 s) for a message printed once
def test_a_refused_run_under_torchrun_says_why_once_and_writes_nothing(two_ranks, tmp_path):
    config = write_yaml(tmp_path / "ddp.yaml", ddp_raw())
    out = two_ranks[0]  # not empty: refused by rank 0, and so by rank 1
    before = _files(out)
    done = run_mtl("run", str(config), "--out", str(out), "--nproc", "2", timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1 and "Choose another --out" in done.stderr, done.stderr
    assert "exitcode" not in done.stderr  # no torchrun log lines
    assert _files(out) == before


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_two_ranks_write_the_run_directory_once(two_ranks, one_process):
    out, done = two_ranks
    assert _files(out) == _files(one_process)  # nothing more: no rank's second copy
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp.yaml", "two"]
    assert done.stdout.count("run directory:") == 1
    assert done.stdout.count("ddp: test") == 1  # the summary table, printed by rank 0 only
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))


def _test_probabilities(folder):
    lines = (folder / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    columns = [i for i, name in enumerate(header) if name.endswith("_prob")]
    test = [r for r in rows if r[header.index("split")] == "test"]
    return [r[0] for r in test], np.array([[float(r[i]) for i in columns] for r in test])


def test_the_gathered_metrics_are_the_saved_models_in_one_process(two_ranks, tmp_path):
    # Evaluated over both ranks' shards, gathered in row order and scored once, the test
    # predictions are exactly what rank 0's saved model gives in one process.
    from mtlkit import trained_engine

    out, _ = two_ranks
    engine = trained_engine(out / "checkpoints" / "best.safetensors", device="cpu")
    predictions = engine.evaluate("test").predictions
    ids, probs = _test_probabilities(out)
    assert list(predictions.image_ids) == ids
    ours = np.stack([predictions.probabilities[h.name] for h in engine.heads], axis=1)
    np.testing.assert_allclose(ours, probs, atol=2e-6)  # predictions.csv keeps 6 decimals


def test_two_ranks_match_one_process_within_the_tolerance(tmp_path):
    # Each step trains on the same 16 images in both runs (rank r takes every other image
    # of the same shuffled order, 8 each) and DDP averages the ranks' gradients, which is
    # the gradient of the mean over the 16. Without batch norm and augmentation only the
    # float summation order differs (and the masked task means, when the ranks' shares of
    # labelled images differ): the probabilities agree to 1e-3. With batch norm they also
    # differ by its statistics over 8 images instead of 16, and with augmentation by the
    # ranks' own draws, so such runs agree only statistically.
    two, _ = _two_ranks(tmp_path, exact_raw())
    one = tmp_path / "one"
    run(load_config(exact_raw(batch_size=2 * PER_RANK)), out_dir=one)
    ids_two, probs_two = _test_probabilities(two)
    ids_one, probs_one = _test_probabilities(one)
    assert ids_two == ids_one
    np.testing.assert_allclose(probs_two, probs_one, atol=1e-3)
    histories = [json.loads((f / "history.json").read_text()) for f in (two, one)]
    np.testing.assert_allclose(
        [e["train_loss"] for e in histories[0]], [e["train_loss"] for e in histories[1]], rtol=1e-3
    )
    metrics = [json.loads((f / "metrics.json").read_text())["sets"] for f in (two, one)]
    for task, values in metrics[1]["test"]["tasks"].items():
        if values["auc"] is not None:
            assert abs(metrics[0]["test"]["tasks"][task]["auc"] - values["auc"]) <= 0.02, task


KILLER = r"""
import json, os, signal, sys, time
from mtlkit import hookimpl, load_config, run

raw, out = json.loads(sys.argv[1]), sys.argv[2]

class KillRank0AfterEpoch1:
    @hookimpl
    def mtl_epoch_end(self, engine, epoch):
        # Once the epoch's state is on disk (it is written in the background); rank 1 is
        # then waiting for rank 0.
        if epoch == 1 and os.environ["RANK"] == "0":
            state = os.path.join(out, "checkpoints", "state.safetensors")
            for _ in range(600):
                if os.path.exists(state):
                    break
                time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGKILL)

run(load_config(raw), out_dir=out, plugins=[KillRank0AfterEpoch1()])
raise SystemExit("the run was not killed")
"""


def test_a_killed_torchrun_job_resumes_under_torchrun_to_the_same_outputs(two_ranks, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "killed"
    started = time.monotonic()
    killed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(2, [])[:4]]
        + [str(script), json.dumps(ddp_raw()), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode != 0, killed.stderr[-2000:]
    assert time.monotonic() - started < 200  # rank 1 was stopped, it did not hang
    assert (out / "checkpoints" / "state.safetensors").is_file()
    assert not (out / "metrics.json").exists()

    resumed = run_mtl("resume", str(out), "--nproc", "2", "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    timing = json.loads((out / "timing.json").read_text())
    assert timing["resumed_from_epoch"] == 1  # epoch 1 was not trained again
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    whole = two_ranks[0]
    for name in ("predictions.csv", "metrics.json"):
        assert (out / name).read_text() == (whole / name).read_text(), name
