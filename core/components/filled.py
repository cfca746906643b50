"""A run configuration with every default written out, each component's options included:
what ``mtl config show`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.config.defaults import written_out
from mtlkit.config.fields import component_slot, is_list, nested_model
from mtlkit.config.schema import ComponentSlot, HeadCoreKeys, RunConfig


def filled_config(config: RunConfig, host: PluginHost) -> dict[str, Any]:
    """``config`` as a plain mapping with the defaults of the config and of every
    component's options model filled in; a head without ``loss`` gets its default loss.

    The config is resolved first, so it is refused with the errors ``mtl validate`` gives;
    the result loads back to a config that resolves to the same components.
    """
    components = resolve_components(config, host)
    data = written_out(config)
    _fill_model(RunConfig, data, "", host)
    loss_slot = component_slot(HeadCoreKeys.model_fields["loss"])
    for index, (spec, head) in enumerate(zip(data["heads"], components.every_head, strict=True)):
        if spec.get("loss") is None:  # the head's default, written out
            default = {loss_slot.key: head.loss_name}
            spec["loss"] = _filled_spec(loss_slot, default, f"heads[{index}].loss", host)
    return data


def _fill_model(model: type[BaseModel], data: dict[str, Any], path: str, host: PluginHost) -> None:
    """Fill, in place, every component slot of ``data`` (a written-out ``model``)."""
    for name, field in model.model_fields.items():
        value = data.get(name)
        if value is None:
            continue
        where = f"{path}.{name}" if path else name
        slot = component_slot(field)
        nested = nested_model(field.annotation)
        if slot is not None:
            if is_list(field.annotation):
                data[name] = [
                    _filled_spec(slot, spec, f"{where}[{i}]", host) for i, spec in enumerate(value)
                ]
            else:
                data[name] = _filled_spec(slot, value, where, host)
        elif nested is not None:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    _fill_model(nested, item, f"{where}[{index}]", host)
            else:
                _fill_model(nested, value, where, host)


def _filled_spec(slot: ComponentSlot, spec: Any, path: str, host: PluginHost) -> dict[str, Any]:
    """One component's mapping: its name first, then its options with their defaults,
    then the core's keys (``loss``, ``columns``) with theirs."""
    spec = {slot.key: spec} if isinstance(spec, str) else dict(spec)
    core_names = set(slot.core_keys.model_fields) if slot.core_keys else set()
    own = {k: v for k, v in spec.items() if k not in core_names}
    entry, options = host.registries[slot.kind].resolve(own, path, key=slot.key)
    filled = {slot.key: entry.name, **(written_out(options) if options is not None else {})}
    if slot.core_keys is not None:
        core = written_out(
            slot.core_keys.model_validate({k: v for k, v in spec.items() if k in core_names})
        )
        _fill_model(slot.core_keys, core, path, host)
        filled.update(core)
    return filled
