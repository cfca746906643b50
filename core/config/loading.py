"""Reading a run configuration: YAML files, ``--set KEY.PATH=VALUE`` overrides and
validation into a :class:`~mtlkit.config.schema.RunConfig`, and writing it back."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mtlkit.config.fields import component_slot
from mtlkit.config.problems import format_loc, validation_problems
from mtlkit.config.schema import (
    AblationConfig,
    RunConfig,
    StatisticsConfig,
    UltrasoundAugmentConfig,
    component_spec,
)
from mtlkit.errors import ConfigError
from mtlkit.files_in import MAX_CONFIG_BYTES, InputFileError, read_bytes
from mtlkit.text import MAX_VALUE, clip, echo


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Read a YAML file (or take a dict), apply ``KEY.PATH=VALUE`` overrides, validate.

    Returns the validated :class:`RunConfig`; raises :class:`ConfigError` naming YAML paths.
    """
    label = None
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        label = str(source)
        raw = read_yaml(Path(source))
    if overrides:
        expand_shorthand(raw)  # so that --set heads[0].dropout=0.1 works on a `- bm` head
    for item in overrides:
        apply_override(raw, item)
        expand_shorthand(raw)  # and on a shorthand an earlier override wrote
    return validate_config(raw, label)


def expand_shorthand(raw: Any) -> None:
    """Turn component shorthands (``bm``) into mappings (``{type: bm}``) in place."""
    if not isinstance(raw, dict):
        return
    for key, field in RunConfig.model_fields.items():  # every top-level component key
        slot = component_slot(field)
        if slot is None or slot.key != "type" or key not in raw:
            continue
        value = raw[key]
        raw[key] = (
            [component_spec(v) for v in value] if isinstance(value, list) else component_spec(value)
        )
    if isinstance(raw.get("data"), dict) and "source" in raw["data"]:
        raw["data"]["source"] = component_spec(raw["data"]["source"])


def validate_config(raw: dict[str, Any], label: str | None = None) -> RunConfig:
    """Validate a plain mapping as a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(
            [("", f"expected a mapping at the top level, got {type(raw).__name__}")], label
        )
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), label) from None


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; a missing file or a syntax error is a :class:`ConfigError`."""
    try:
        text = read_bytes(path, "config", MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([("", "file not found")], str(path)) from None
    except InputFileError as exc:
        raise ConfigError([("", str(exc))], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"cannot read: {exc}")], str(path)) from None
    try:
        data = parse_yaml(text)
    except RecursionError:
        raise ConfigError(
            [("", f"YAML nesting too deep (more than {MAX_DEPTH} levels)")], str(path)
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = clip(getattr(exc, "problem", None) or str(exc), MAX_VALUE)
        raise ConfigError([("", f"YAML syntax error at {where}{problem}")], str(path)) from None
    except Exception as exc:  # noqa: BLE001 - a tag PyYAML cannot build (!!int x, !!int)
        raise ConfigError(
            [
                (
                    "",
                    f"YAML value error: {type(exc).__name__}: {clip(str(exc), MAX_VALUE)} "
                    "(a tagged value?)",
                )
            ],
            str(path),
        ) from None
    if data is None:
        raise ConfigError([("", "the file is empty")], str(path))
    return data


MAX_DEPTH = 64
"""Nesting levels of a YAML document (a config is about 5 deep)."""

MAX_NODES = 100_000
"""Values of a YAML document once its aliases are expanded (a config has a few hundred):
a 1 KB file of nested aliases (the "billion laughs") would expand to billions."""


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML without implicit dates (no config value is a date, and ``2024-13-45``
    should reach validation as text instead of failing inside the parser), with repeated
    keys refused (PyYAML would silently keep the last one), and bounded: at most MAX_DEPTH
    levels of nesting and MAX_NODES values with every alias expanded."""

    def compose_node(self, parent, index):
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)

    def construct_object(self, node, deep=False):
        # PyYAML's own constructors crash on some tagged values (`!!int` with no digits:
        # IndexError, `!!bool maybe`: KeyError); report them like any YAML error, with a line.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot build {node.tag} value {node.value!r} ({exc})",
                node.start_mark,
            ) from None


def _check_expanded_size(root) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES values; counted with
    each distinct node's expanded size computed once, so the check itself is cheap."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once (validation reports it)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        sizes[id(node)] = total = min(total, MAX_NODES + 1)
        return total

    if size(root) > MAX_NODES:
        raise yaml.composer.ComposerError(
            None,
            None,
            f"its aliases expand to more than {MAX_NODES} values (an alias bomb?)",
            root.start_mark,
        )


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way configs and ``--set`` values are read."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """Split ``heads[1].threshold`` into ``['heads', 1, 'threshold']``."""
    parts: list[str | int] = []
    pos = 0
    for match in _PATH_PART.finditer(path):
        gap = path[pos : match.start()]
        if gap not in ("", "."):
            raise ConfigError([(path, "malformed key path in --set")])
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not parts or path[pos:]:
        raise ConfigError([(path, "malformed key path in --set")])
    return parts


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``KEY.PATH=VALUE`` override in place; VALUE is parsed as YAML."""
    if "=" not in item:
        raise ConfigError([(item, "an override must look like KEY.PATH=VALUE")])
    path, _, text = item.partition("=")
    path = path.strip()
    try:
        value = parse_yaml(text)
    except Exception:  # noqa: BLE001 - any YAML that PyYAML cannot build
        raise ConfigError([(path, f"cannot parse override value {echo(text)}")]) from None
    parts = parse_path(path)
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        where = format_loc(tuple(parts[: depth + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError([(where, "no such list item to override")])
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError([(where, "cannot set a key inside a non-mapping value")])
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError([(path, "no such list item to override")])
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError([(path, "cannot set a key inside a non-mapping value")])


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML, as recorded in every run directory."""
    data = config.model_dump(mode="json")
    for key in ("baselines", "loggers"):
        if not data.get(key):
            # recorded only when used: a run without them records what it did before the
            # key existed, so it can still be resumed (which compares this text)
            data.pop(key, None)
    if data.get("ablation") == AblationConfig().model_dump(mode="json"):
        data.pop("ablation", None)  # likewise
    if config.evaluation.statistics == StatisticsConfig():
        data["evaluation"].pop("statistics")  # the same: recorded only when changed
    for key, default in (("consistency", None), ("consistency_margin", 0.1), ("ensemble", False)):
        if data["evaluation"].get(key) == default:
            data["evaluation"].pop(key)  # likewise
    augmentation = data["training"]["augmentation"]
    if config.training.augmentation.ultrasound == UltrasoundAugmentConfig():
        augmentation.pop("ultrasound")  # likewise
    if not augmentation["trivial"]:
        augmentation.pop("trivial")  # likewise
    rois = [data["data"]["roi"]] + [
        e["roi"] for e in data["evaluation"].get("external", []) if e.get("roi")
    ]
    for roi in rois:
        for key in ("localizer", "train_mode"):
            if roi.get(key) is None:
                roi.pop(key, None)  # likewise: the automatic RoI's keys, only when used
    if config.data.split.folds is not None:
        # the test share is 1/folds; a recorded test_fraction would be refused on reading
        data["data"]["split"].pop("test_fraction", None)
    return yaml.safe_dump(data, sort_keys=False)
