"""Which plugins a run used, recorded in environment.json and in every checkpoint, so that a
model can be audited, and loading it where one of those plugins is missing names the
distribution to install."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import Components
from mtlkit.config.schema import RunConfig


def components_used(config: RunConfig, components: Components, host: PluginHost) -> list[dict]:
    """One record per component the config uses: its kind and name, the plugin that
    registered it, that plugin's distribution and version (None for in-process plugins)."""
    wanted: list[tuple[str, str]] = [("backbone", config.backbone["type"])]
    for spec, head in zip(config.heads, components.every_head, strict=True):
        wanted.append(("head", spec["type"]))
        loss = spec.get("loss") or head.loss_name
        wanted.append(("task_loss", loss if isinstance(loss, str) else loss.get("type")))
    wanted += [("constraint", spec["type"]) for spec in config.constraints]
    wanted.append(("weighting", config.weighting["type"]))
    wanted += [("metric", name) for name in config.evaluation.metrics]
    wanted.append(("data_source", config.data.source["type"]))
    wanted += [("data_source", external.source["type"]) for external in config.evaluation.external]
    wanted += [("report", spec["type"]) for spec in config.reports]
    records: list[dict[str, Any]] = []
    for kind, name in dict.fromkeys(wanted):
        registry = host.registries[kind]
        if name in registry:
            records.append(_record(kind, name, registry.get(name).owner, host))
    return records


def _record(kind: str, name: str, plugin: str, host: PluginHost) -> dict[str, Any]:
    distribution = host.owner_distribution(plugin)
    return {
        "kind": kind,
        "name": name,
        "plugin": plugin,
        "distribution": distribution,
        "version": _version(distribution),
    }


def _version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def missing_plugins(recorded: list[dict[str, Any]], host: PluginHost) -> list[str]:
    """For each recorded component this host does not have, what to install to get it."""
    problems = []
    for item in recorded:
        registry = host.registries.get(item.get("kind", ""))
        if registry is None or item.get("name") in registry:
            continue
        where = f"{item['kind']} {item['name']!r} came from plugin {item.get('plugin')!r}"
        distribution = item.get("distribution")
        if distribution:
            pinned = f"{distribution}=={item['version']}" if item.get("version") else distribution
            problems.append(
                f"{where} (distribution {distribution} {item.get('version') or ''}".rstrip()
                + f"), which is not installed here: pip install '{pinned}'"
            )
        else:
            problems.append(
                f"{where}, registered in-process when the model was trained: register it "
                "again, e.g. Engine(config, plugins=[...])"
            )
    return problems
