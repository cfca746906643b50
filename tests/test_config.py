"""Loading and validating run configurations: every error names the YAML path."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import QUICK, tiny_raw, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlkit import ConfigError, load_config
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.config.loading import apply_override, dump_config, parse_path, read_yaml


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def problems_of(raw, overrides=(), host=None) -> dict[str, str]:
    """``{yaml_path: message}`` of the ConfigError that loading (and resolving) raises."""
    with pytest.raises(ConfigError) as info:
        config = load_config(raw, list(overrides))
        if host is not None:
            resolve_components(config, host)
    return dict(info.value.problems)


def test_quick_config_loads_and_resolves(host):
    config = load_config(QUICK)
    components = resolve_components(config, host)
    assert components.task_names == ["bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"]
    assert len(components.constraint_specs) == 1


def test_tiny_config_resolves(tiny_config, host):
    components = resolve_components(load_config(tiny_config), host)
    assert components.source_options.patients == 24


# --- validation errors ----------------------------------------------------------------------


def test_unknown_top_level_key(tiny_config):
    tiny_config["trainig"] = {"epochs": 1}
    assert problems_of(tiny_config) == {"trainig": "unknown key"}


def test_unknown_key_in_training(tiny_config):
    tiny_config["training"]["epohcs"] = 3
    assert problems_of(tiny_config) == {"training.epohcs": "unknown key"}


def test_wrong_type_names_path_and_value(tiny_config):
    tiny_config["training"]["epochs"] = "abc"
    problems = problems_of(tiny_config)
    assert list(problems) == ["training.epochs"]
    assert "integer" in problems["training.epochs"] and "'abc'" in problems["training.epochs"]


def test_negative_epochs(tiny_config):
    tiny_config["training"]["epochs"] = -2
    problems = problems_of(tiny_config)
    assert "greater than or equal to 1" in problems["training.epochs"]


def test_several_problems_are_reported_together(tiny_config):
    tiny_config["training"]["epochs"] = 0
    tiny_config["data"]["image_size"] = 8
    tiny_config["evaluation"]["threshold"] = 1.5
    assert set(problems_of(tiny_config)) == {
        "training.epochs",
        "data.image_size",
        "evaluation.threshold",
    }


def test_nested_list_paths_use_brackets(tiny_config):
    tiny_config["training"]["augmentation"]["scale"] = [0.9, 0.1]
    problems = problems_of(tiny_config)
    assert list(problems) == ["training.augmentation.scale"]


def test_misspelled_head_type_suggests_the_right_one(tiny_config, host):
    tiny_config["heads"][1] = {
        "type": "binaryy",
        "name": "alnm",
        "label": "alnm_count",
        "threshold": 1,
    }
    problems = problems_of(tiny_config, host=host)
    assert "heads[1].type" in problems
    assert "did you mean 'binary'?" in problems["heads[1].type"]
    assert "choices: alnm, alnm_burden, binary, bm, multiclass" in problems["heads[1].type"]


def test_head_option_errors_name_the_head(tiny_config, host):
    tiny_config["heads"][2] = {"type": "alnm_burden", "min_nodes": 2, "dropuot": 0.2}
    problems = problems_of(tiny_config, host=host)
    assert problems.get("heads[2].dropuot") == "unknown key"


def test_loss_of_a_head_is_resolved_under_its_path(tiny_config, host):
    tiny_config["heads"][0] = {"type": "bm", "loss": {"type": "bce", "pos_weight": -1}}
    problems = problems_of(tiny_config, host=host)
    assert "heads[0].loss.pos_weight" in problems


def test_config_error_message_contains_source_and_paths(tmp_path, tiny_config):
    tiny_config["training"]["epochs"] = "abc"
    path = write_yaml(tmp_path / "bad.yaml", tiny_config)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert "training.epochs:" in text


# --- YAML files -----------------------------------------------------------------------------


def test_yaml_syntax_error_gives_line_number(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata:\n  source: synthetic\n  image_size: [1, 2\nheads: [bm]\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert "YAML syntax error" in message
    line = int(re.search(r"line (\d+)", message).group(1))
    assert line in (4, 5)  # the unclosed list opens on line 4; the parser notices on line 5


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "empty.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_yaml_with_impossible_date_is_a_config_error(tmp_path):
    path = tmp_path / "date.yaml"
    path.write_text("name: run-2024-13-45\nseed: 2024-13-45\n")
    assert read_yaml(path)["seed"] == "2024-13-45"  # no implicit dates in configs
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "seed" in [p for p, _ in info.value.problems]


def test_dump_config_round_trips(tiny_config):
    config = load_config(tiny_config)
    again = load_config(yaml.safe_load(dump_config(config)))
    assert again == config


# --- --set overrides ------------------------------------------------------------------------


def test_override_nested_value(tiny_config):
    config = load_config(tiny_config, ["training.optimizer.lr=0.01", "training.epochs=7"])
    assert config.training.optimizer == {"name": "adam", "lr": 0.01}
    assert config.training.epochs == 7


def test_override_creates_missing_mapping(tiny_config):
    del tiny_config["training"]["scheduler"]
    config = load_config(tiny_config, ["training.scheduler.name=step"])
    assert config.training.scheduler == {"name": "step"}


def test_override_value_is_yaml(tiny_config):
    config = load_config(tiny_config, ["seed=[1, 2, 3]", "data.split.stratify=bm"])
    assert config.seed == [1, 2, 3]
    assert config.data.split.stratify == ["bm"]


def test_override_list_item_of_a_mapping_head(tiny_config):
    config = load_config(tiny_config, ["heads[2].dropout=0.1", "heads[2].min_nodes=5"])
    assert config.heads[2] == {"type": "alnm_burden", "min_nodes": 5, "dropout": 0.1}


def test_override_replaces_a_whole_list_item(tiny_config):
    config = load_config(tiny_config, ["heads[0]={type: bm, dropout: 0.2}"])
    assert config.heads[0] == {"type": "bm", "dropout": 0.2}


def test_override_list_item_of_a_shorthand_head(tiny_config):
    assert tiny_config["heads"][0] == "bm"
    config = load_config(tiny_config, ["heads[0].dropout=0.1"])
    assert config.heads[0] == {"type": "bm", "dropout": 0.1}


@pytest.mark.parametrize("key", ["reports", "loggers", "baselines", "constraints"])
def test_override_inside_any_shorthand_component_list(tiny_config, key):
    # every list of components takes shorthands, in the file or from an earlier --set
    name = {"reports": "summary", "loggers": "tensorboard", "baselines": "radiomics"}.get(
        key, "hierarchical_hinge"
    )
    tiny_config[key] = [name]
    raw = load_config(tiny_config, [f"{key}[0].extra=1"]).model_dump()[key]
    assert raw[0] == {"type": name, "extra": 1}
    later = load_config({**tiny_config, key: []}, [f"{key}=[{name}]", f"{key}[0].extra=1"])
    assert later.model_dump()[key][0] == {"type": name, "extra": 1}


def test_a_config_without_loggers_is_recorded_as_before_they_existed(tiny_config):
    # resuming compares the recorded text: runs made before `loggers` existed still resume
    assert "loggers" not in yaml.safe_load(dump_config(load_config(tiny_config)))
    with_one = load_config({**tiny_config, "loggers": ["tensorboard"]})
    assert yaml.safe_load(dump_config(with_one))["loggers"] == [{"type": "tensorboard"}]


def test_override_result_is_validated(tiny_config):
    assert "training.epochs" in problems_of(tiny_config, ["training.epochs=abc"])


@pytest.mark.parametrize(
    "item, path, words",
    [
        ("heads[0.dropout=0.1", "heads[0.dropout", "malformed"),
        ("training..epochs=1", "training..epochs", "malformed"),
        ("training.epochs.=1", "training.epochs.", "malformed"),
        ("=1", "", "malformed"),
        ("heads[-1].dropout=0.1", "heads[-1].dropout", "malformed"),
        ("training.epochs", "training.epochs", "KEY.PATH=VALUE"),
        ("heads[9].dropout=0.1", "heads[9]", "no such list item"),
        ("heads[5]=bm", "heads[5]", "no such list item"),
        ("training[0]=1", "training[0]", "no such list item"),
        ("name.first=x", "name.first", "non-mapping"),
        ("training.epochs=[1, 2", "training.epochs", "cannot parse"),
    ],
)
def test_bad_overrides_name_the_path(tiny_config, item, path, words):
    with pytest.raises(ConfigError) as info:
        apply_override(tiny_config, item)
    ((where, message),) = info.value.problems
    assert where == path
    assert words in message


def test_parse_path():
    assert parse_path("heads[1].threshold") == ["heads", 1, "threshold"]
    assert parse_path("a.b.c") == ["a", "b", "c"]
    assert parse_path("m[0][2]") == ["m", 0, 2]


def test_override_with_impossible_date_is_a_config_error(tiny_config):
    raw = {}
    apply_override(raw, "seed=2024-13-45")
    assert raw == {"seed": "2024-13-45"}  # text, not a date the parser chokes on
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config, ["seed=2024-13-45"])
    assert "seed" in [p for p, _ in info.value.problems]


# --- property: an override either reads back or is a ConfigError -----------------------------

KEYS = st.sampled_from(
    ["name", "seed", "data", "source", "training", "epochs", "heads", "split", "x", "type"]
) | st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
PARTS = st.lists(st.one_of(KEYS, st.integers(0, 6)), min_size=1, max_size=5)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def render(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def read_back(raw, parts):
    node = raw
    for part in parts:
        node = node[part]
    return node


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(parts=PARTS, value=VALUES)
def test_override_reads_back_or_is_a_config_error(parts, value):
    raw = tiny_raw()
    path = render(parts)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    try:
        apply_override(raw, f"{path}={text}")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p, _ in exc.problems)
        return
    assert read_back(raw, parts) == value, (path, text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(item=st.text(max_size=30))
def test_any_override_text_is_applied_or_is_a_config_error(item):
    raw = tiny_raw()
    try:
        apply_override(raw, item)
    except ConfigError:
        pass


# --- string shorthand and cross-references ---------------------------------------------------


def test_string_shorthand_for_components(tiny_config):
    tiny_config["backbone"] = "resnet50"
    tiny_config["weighting"] = "equal"
    tiny_config["data"]["source"] = "synthetic"
    tiny_config["reports"] = ["summary"]
    config = load_config(tiny_config)
    assert config.backbone == {"type": "resnet50"}
    assert config.weighting == {"type": "equal"}
    assert config.data.source == {"type": "synthetic"}
    assert config.heads[0] == {"type": "bm"}
    assert config.reports == [{"type": "summary"}]


def test_constraint_naming_a_missing_task(tiny_config, host):
    tiny_config["constraints"][0]["pairs"] = [["bm", "alnm"], ["alnm", "nodal"]]
    problems = problems_of(tiny_config, host=host)
    assert list(problems) == ["constraints[0]"]
    assert "'nodal'" in problems["constraints[0]"]


def test_constraint_with_a_cycle(tiny_config, host):
    tiny_config["constraints"][0]["pairs"] = [
        ["bm", "alnm"],
        ["alnm", "alnm_ge2"],
        ["alnm_ge2", "bm"],
    ]
    problems = problems_of(tiny_config, host=host)
    assert "cycle" in problems["constraints[0]"]
    assert "bm -> alnm -> alnm_ge2 -> bm" in problems["constraints[0]"]


def test_constraint_pair_relating_a_task_to_itself(tiny_config, host):
    tiny_config["constraints"][0]["pairs"] = [["bm", "bm"]]
    assert "itself" in problems_of(tiny_config, host=host)["constraints[0]"]


def test_constraint_option_error_names_its_path(tiny_config, host):
    tiny_config["constraints"][0]["margin"] = 2
    assert "constraints[0].margin" in problems_of(tiny_config, host=host)


def test_select_naming_an_unknown_task(tiny_config, host):
    tiny_config["evaluation"]["select"] = "size.auc"
    problems = problems_of(tiny_config, host=host)
    assert "no task called 'size'" in problems["evaluation.select"]


def test_select_naming_an_unconfigured_metric(tiny_config, host):
    tiny_config["evaluation"]["select"] = "mean.f2"
    assert "not in evaluation.metrics" in problems_of(tiny_config, host=host)["evaluation.select"]


def test_unknown_metric_suggests_the_closest(tiny_config, host):
    tiny_config["evaluation"]["metrics"] = ["acc", "aucc"]
    tiny_config["evaluation"]["select"] = "mean.acc"
    problems = problems_of(tiny_config, host=host)
    assert "did you mean 'auc'?" in problems["evaluation.metrics[1]"]


def test_duplicate_task_names(tiny_config, host):
    tiny_config["heads"].append({"type": "alnm_burden", "min_nodes": 3})
    problems = problems_of(tiny_config, host=host)
    assert problems == {"heads[5].name": "task name 'alnm_ge3' is used by two heads"}


def test_stratify_and_reference_columns_must_name_tasks(tiny_config, host):
    tiny_config["data"]["split"]["stratify"] = ["bm", "size"]
    tiny_config["evaluation"]["reference_columns"]["size"] = "oracle_size"
    problems = problems_of(tiny_config, host=host)
    assert "data.split.stratify[1]" in problems
    assert "evaluation.reference_columns.size" in problems


def test_all_component_problems_are_reported_together(tiny_config, host):
    tiny_config["backbone"] = {"type": "timm", "model": "resnet10t", "pretrained": "/no/file"}
    tiny_config["heads"][0] = {"type": "bmm"}
    tiny_config["weighting"] = {"type": "equal", "weights": {"nope": 2}}
    tiny_config["reports"] = ["summary", "sumary"]
    problems = problems_of(tiny_config, host=host)
    assert {"backbone.pretrained", "heads[0].type", "weighting", "reports[1].type"} <= set(problems)


def test_seed_list_must_not_repeat(tiny_config):
    tiny_config["seed"] = [1, 1]
    assert "seed" in problems_of(tiny_config)


def test_seeds_property(tiny_config):
    assert load_config(tiny_config).seeds == [0]
    tiny_config["seed"] = [3, 4]
    assert load_config(tiny_config).seeds == [3, 4]


def test_load_config_does_not_modify_its_input(tiny_config):
    before = copy.deepcopy(tiny_config)
    load_config(tiny_config, ["training.epochs=9", "heads[2].min_nodes=4"])
    assert tiny_config == before


@pytest.mark.parametrize("output_dir", ["runs/{nme}/{timestamp}", "runs/{name"])
def test_output_dir_with_unknown_placeholder_is_a_config_error(tiny_config, output_dir):
    tiny_config["output_dir"] = output_dir
    problems = problems_of(tiny_config)
    assert "output_dir" in problems


def test_output_dir_placeholders_expand(tiny_config):
    from mtlkit.runs.runner import default_out_dir

    tiny_config["output_dir"] = "runs/{name}/{timestamp}"
    out = default_out_dir(load_config(tiny_config))
    assert out.parts[:2] == ("runs", "tiny")
    assert re.fullmatch(r"\d{8}-\d{6}", out.parts[2])


# --- checks added after review ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "bm.2", "mean", "2nd", "a b"])
def test_task_names_must_be_identifiers(tiny_config, name):
    tiny_config["heads"][0] = {"type": "bm", "name": name}
    tiny_config["data"]["split"]["stratify"] = ["alnm"]
    problems = dict(resolve_problems(tiny_config))
    assert "heads[0].name" in problems


def test_a_loss_for_another_kind_of_head_is_refused(tiny_config):
    tiny_config["heads"][0] = {"type": "bm", "loss": "cross_entropy"}
    problems = dict(resolve_problems(tiny_config))
    assert "binary" in problems["heads[0].loss.type"]


def test_split_fractions_must_leave_training_patients(tiny_config):
    tiny_config["data"]["split"] = {"test_fraction": 0.6, "val_fraction": 0.5}
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config)
    assert [p for p, _ in info.value.problems] == ["data.split"]


def test_inconsistent_synthetic_options_are_a_config_error(tiny_config):
    tiny_config["data"]["source"].update(images_min=5, images_max=2)
    problems = dict(resolve_problems(tiny_config))
    assert "images_max" in problems["data.source"]


def resolve_problems(raw):
    with pytest.raises(ConfigError) as info:
        resolve_components(load_config(raw), PluginHost())
    return info.value.problems
