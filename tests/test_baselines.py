"""The baseline contract as the core enforces it: config entries, the optional extra, the
splits and outputs a baseline gets and returns, the layout it is written in, and resuming.
These use a tiny in-process baseline, so they need no optional extra."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import tiny_raw, write_yaml
from scipy.stats import ttest_rel

from mtlkit import (
    Baseline,
    BaselineContext,
    BaselineOutput,
    ConfigError,
    OptionsModel,
    PluginError,
    UsageError,
    hookimpl,
    load_config,
    run,
)
from mtlkit.cli import main


class PrevalenceOptions(OptionsModel):
    name: str = "prevalence"
    shape: str = "right"  # "wrong" returns one probability too few; "file" a reserved file


class Prevalence(Baseline):
    """Predicts each task's share of positives among the training images."""

    Options = PrevalenceOptions
    seen: list[tuple[str, int]] = []  # (event, seed)

    def __init__(self, options: PrevalenceOptions):
        super().__init__(options.name)
        self.options = options

    def prepare(self, context: BaselineContext) -> BaselineOutput:
        Prevalence.seen.append(("prepare", -1))
        return BaselineOutput(files={"notes/prepared.txt": "ok\n"}, warnings=["prepared"])

    def fit(self, context: BaselineContext, seed: int) -> BaselineOutput:
        Prevalence.seen.append(("fit", seed))
        data = context.data
        train = data.indices("train")
        probabilities = {}
        for split in context.evaluate:
            n = len(data.indices(split)) - (self.options.shape == "wrong")
            probabilities[split] = {}
            for column, head in enumerate(context.heads):
                known = data.targets[train, column]
                share = float(known[~known.isnan()].mean())
                probabilities[split][head.name] = np.full(n, share)
        files = {"metrics.json" if self.options.shape == "file" else "seen.txt": f"{seed}\n"}
        return BaselineOutput(probabilities=probabilities, files=files)


class NeedsExtra(Baseline):
    requires = ("a_module_that_is_not_installed",)
    install = "pip install the-extra"


class Plugin:
    name = "test_baselines"

    @hookimpl
    def mtl_register_baselines(self, registry):
        registry.register("prevalence", Prevalence)
        registry.register("needs_extra", NeedsExtra)


@pytest.fixture(autouse=True)
def fresh_events():
    Prevalence.seen = []


def raw_with(*baselines, **top) -> dict:
    raw = tiny_raw(baselines=list(baselines), reports=["summary", "markdown"])
    raw.update(top)
    return raw


def test_a_baseline_is_fitted_per_seed_on_the_cnns_split_and_scored_like_the_cnn(tmp_path):
    raw = raw_with("prevalence", seed=[3, 4])
    result = run(load_config(raw), out_dir=tmp_path / "run", plugins=[Plugin()])
    folder = tmp_path / "run" / "prevalence"
    assert Prevalence.seen == [("prepare", -1), ("fit", 3), ("fit", 4)]
    assert (folder / "notes" / "prepared.txt").read_text() == "ok\n"
    assert (folder / "seed_4" / "seen.txt").read_text() == "4\n"
    cnn = json.loads((tmp_path / "run" / "seed_3" / "metrics.json").read_text())
    ours = json.loads((folder / "seed_3" / "metrics.json").read_text())
    assert ours["model"] == "prevalence" and "best_epoch" not in ours
    for split in ("val", "test"):
        assert ours["sets"][split]["n_images"] == cnn["sets"][split]["n_images"]
        bm = ours["sets"][split]["tasks"]["bm"]
        assert bm["n"] == cnn["sets"][split]["tasks"]["bm"]["n"]
        assert bm["auc"] == 0.5  # one constant probability ranks nothing
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["seeds"] == [3, 4] and "select" not in summary
    assert result.baselines["prevalence"]["sets"]["test"]["tasks"]["bm"]["auc"]["mean"] == 0.5
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| bm | CNN |" in report and "| bm | prevalence |" in report


def test_a_baselines_seeds_have_an_ensemble_as_the_cnns_do(tmp_path):
    raw = raw_with("prevalence", seed=[3, 4])
    raw["evaluation"]["ensemble"] = True
    run(load_config(raw), out_dir=tmp_path / "run", plugins=[Plugin()])
    folder = tmp_path / "run" / "prevalence"
    ensemble = json.loads((folder / "metrics.json").read_text())["ensemble"]
    assert ensemble["seeds"] == [3, 4] and list(ensemble["sets"]) == ["val", "test"]
    assert ensemble["sets"]["test"]["tasks"]["bm"]["auc"] == 0.5  # the same constant twice
    assert (folder / "ensemble_predictions.csv").is_file()
    assert "ensemble" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "comparison.json").is_file()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| bm | CNN, ensemble of 2 seeds |" in report
    assert "| bm | prevalence, ensemble of 2 seeds |" in report


def test_a_run_with_a_baseline_writes_the_comparison_with_p_values(tmp_path):
    raw = raw_with("prevalence", seed=[3, 4])
    raw["reports"] = ["html", "markdown"]
    run(load_config(raw), out_dir=tmp_path / "run", plugins=[Plugin()])
    document = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert document["reference"] == "cnn" and list(document["models"]) == ["cnn", "prevalence"]
    cnn = document["models"]["cnn"]["metrics"]["bm"]["auc"]
    theirs = document["models"]["prevalence"]["metrics"]["bm"]["auc"]
    assert cnn["test"] is None and theirs["values"] == [0.5, 0.5]
    assert theirs["test"] == "paired t-test over runs"
    assert cnn["values"][0] != cnn["values"][1]  # else the t-test is undefined
    assert theirs["p_value"] == pytest.approx(ttest_rel(theirs["values"], cnn["values"]).pvalue)
    rows = (tmp_path / "run" / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("model,kind,task,metric,mean,sd,ci_low,ci_high,runs,p_value")
    assert any(r.startswith("prevalence,metric,bm,auc,0.5,0,") for r in rows)
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'id="comparison"' in page and "paired t-test over runs" in page
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## CNN against the baselines (test)" in markdown and "| prevalence |" in markdown


def test_probabilities_that_break_the_contract_are_an_error_naming_the_baseline(tmp_path):
    raw = raw_with({"type": "prevalence", "shape": "wrong"})
    with pytest.raises(PluginError, match=r"baseline 'prevalence'.*shape"):
        run(load_config(raw), out_dir=tmp_path / "a", plugins=[Plugin()], cnn=False)
    raw = raw_with({"type": "prevalence", "shape": "file"})
    with pytest.raises(PluginError, match="metrics.json"):
        run(load_config(raw), out_dir=tmp_path / "b", plugins=[Plugin()], cnn=False)


def test_a_missing_extra_is_a_config_error_with_the_install_command(tmp_path):
    with pytest.raises(ConfigError) as info:
        run(load_config(raw_with("needs_extra")), out_dir=tmp_path / "run", plugins=[Plugin()])
    (path, message), *_ = info.value.problems
    assert path == "baselines[0].type"
    assert "a_module_that_is_not_installed" in message and "pip install the-extra" in message
    assert info.value.exit_code == 2 and not (tmp_path / "run").exists()


def test_names_are_unique_and_not_the_cnns(tmp_path):
    for names, problem in (
        (["one", "one"], "used by two baselines"),
        (["CNN"], "reserved"),
        (["seed_1"], "reserved"),
        (["a/b"], "letters, digits"),
    ):
        raw = raw_with(*({"type": "prevalence", "name": n} for n in names))
        with pytest.raises(ConfigError, match=problem):
            run(load_config(raw), out_dir=tmp_path / "run", plugins=[Plugin()])


def test_without_the_cnn_a_config_needs_a_baseline(tmp_path):
    with pytest.raises(UsageError, match="nothing to run"):
        run(load_config(raw_with()), out_dir=tmp_path / "run", cnn=False)


def test_resuming_keeps_finished_baseline_runs(tmp_path):
    raw = raw_with("prevalence", seed=[0, 1])
    out = tmp_path / "run"
    run(load_config(raw), out_dir=out, plugins=[Plugin()], cnn=False)
    before = (out / "prevalence" / "metrics.json").read_text()
    (out / "prevalence" / "seed_1" / "metrics.json").unlink()  # as if killed during seed 1
    Prevalence.seen = []
    run(load_config(raw), out_dir=out, plugins=[Plugin()], cnn=False, resume=True)
    assert Prevalence.seen == [("prepare", -1), ("fit", 1)]
    assert (out / "prevalence" / "metrics.json").read_text() == before


def test_the_baseline_shorthand_and_overrides_reach_its_options(tmp_path):
    config = load_config(raw_with("prevalence"), ["baselines[0].name=other"])
    assert config.baselines == [{"type": "prevalence", "name": "other"}]
    with pytest.raises(ConfigError) as info:
        run(
            load_config(raw_with({"type": "prevalence", "colour": 1})),
            out_dir=tmp_path / "run",
            plugins=[Plugin()],
        )
    assert info.value.problems == [("baselines[0].colour", "unknown key")]


def test_a_checkpoint_of_a_run_with_baselines_is_evaluated_without_them(tmp_path):
    out = tmp_path / "run"
    run(load_config(raw_with("prevalence")), out_dir=out, plugins=[Plugin()])
    source = {"type": "synthetic", "patients": 6, "image_size": 32, "seed": 5}
    data = write_yaml(tmp_path / "other.yaml", {"name": "other", "source": source})
    checkpoint = out / "checkpoints" / "best.safetensors"
    # the `mtl` command's plugins do not include this test's baseline: it is not needed
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "eval"),
            "--quiet",
        ]
    )
    assert code == 0
    assert "other" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["sets"]


def test_config_yaml_records_baselines_only_when_there_are_some():
    from mtlkit.config.loading import dump_config

    assert "baselines" not in dump_config(load_config(tiny_raw()))  # as before the key existed
    recorded = dump_config(load_config(raw_with("prevalence")))
    assert load_config(yaml.safe_load(recorded)).baselines == [{"type": "prevalence"}]


def test_a_run_of_baselines_alone_passes_every_default_report(tmp_path):
    # gradcam and html need the CNN's model and metrics: without them they say so and the
    # command still succeeds (mtl radiomics with a config that lists them)
    raw = tiny_raw(baselines=["prevalence"], reports=["summary", "markdown", "gradcam", "html"])
    result = run(load_config(raw), out_dir=tmp_path / "run", plugins=[Plugin()], cnn=False)
    assert result.metrics == {} and "prevalence" in result.baselines
    assert (tmp_path / "run" / "prevalence" / "metrics.json").is_file()
