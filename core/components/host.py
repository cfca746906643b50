"""Builds a fresh pluggy manager per engine or CLI call and fills the typed registries.

Built-in plugins are entry points of this distribution, loaded exactly like third-party
ones; the core never imports ``mtlkit.plugins``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from mtlkit.components import hookspecs
from mtlkit.components.registry import Registry
from mtlkit.errors import MtlError, PluginError

ENTRY_POINT_GROUP = "mtlkit"
DISABLE_ENV = "MTLKIT_DISABLE_PLUGINS"
"""Comma-separated plugin (entry point) names to skip, e.g. ``MTLKIT_DISABLE_PLUGINS=foo,bar``."""

hookimpl = pluggy.HookimplMarker("mtlkit")


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name and the distribution that provided it (None if in-process)."""

    name: str
    distribution: str | None


class PluginHost:
    """One plugin manager plus the registries its plugins filled.

    ``extra_plugins`` are objects or modules registered in-process (tests, notebooks) after
    the installed ones, under ``name`` if they have a ``__name__`` or ``name`` attribute.
    """

    def __init__(self, extra_plugins: Iterable[Any] = (), *, load_installed: bool = True):
        self.pm = pluggy.PluginManager("mtlkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.disabled = _disabled_names()
        if load_installed:
            for ep in _entry_points():
                self._load_entry_point(ep)
        for plugin in extra_plugins:
            name = _plugin_name(plugin)
            if name in self.disabled:
                continue
            self._register(plugin, name, distribution=None)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {self.pm.get_name(exc.plugin)!r} has a hook implementation that matches "
                f"no mtlkit hook: {exc}"
            ) from None
        self.registries = {kind: Registry(kind) for kind in hookspecs.REGISTRATION_HOOKS.values()}
        for hook_name, kind in hookspecs.REGISTRATION_HOOKS.items():
            self._collect(hook_name, self.registries[kind])

    # --- typed access to the registries ------------------------------------------------

    @property
    def backbones(self) -> Registry:
        return self.registries["backbone"]

    @property
    def heads(self) -> Registry:
        return self.registries["head"]

    @property
    def task_losses(self) -> Registry:
        return self.registries["task_loss"]

    @property
    def constraints(self) -> Registry:
        return self.registries["constraint"]

    @property
    def weightings(self) -> Registry:
        return self.registries["weighting"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metric"]

    @property
    def data_sources(self) -> Registry:
        return self.registries["data_source"]

    @property
    def reports(self) -> Registry:
        return self.registries["report"]

    @property
    def baselines(self) -> Registry:
        return self.registries["baseline"]

    @property
    def commands(self) -> Registry:
        return self.registries["command"]

    # --- training events ---------------------------------------------------------------

    def fit_start(self, engine: Any) -> None:
        self.pm.hook.mtl_fit_start(engine=engine)

    def epoch_end(self, engine: Any, epoch: int, logs: dict[str, Any]) -> None:
        self.pm.hook.mtl_epoch_end(engine=engine, epoch=epoch, logs=logs)

    def fit_end(self, engine: Any, result: Any) -> None:
        self.pm.hook.mtl_fit_end(engine=engine, result=result)

    # --- loading ------------------------------------------------------------------------

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        if ep.name in self.disabled:
            return
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin is reported by name, whatever it raised
            raise PluginError(
                f"plugin {ep.name!r} (distribution {dist or 'unknown'}) failed to import: "
                f"{type(exc).__name__}: {exc}\n"
                f"Fix or uninstall it, or run without it: {DISABLE_ENV}={ep.name}"
            ) from None
        self._register(plugin, ep.name, dist)

    def _register(self, plugin: Any, name: str, distribution: str | None) -> None:
        if self.pm.has_plugin(name):
            other = next(p.distribution for p in self.plugins if p.name == name)
            raise PluginError(
                f"two plugins are called {name!r} (distributions {other or 'in-process'} and "
                f"{distribution or 'in-process'}); disable one with {DISABLE_ENV}={name}"
            )
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy refuses the same object twice
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from None
        self.plugins.append(PluginInfo(name, distribution))

    def _collect(self, hook_name: str, registry: Registry) -> None:
        # Each implementation is called on its own so the registry knows the owner, and an
        # implementation may accept a subset of the hook's arguments.
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # in registration order
            kwargs = {arg: registry.bound(impl.plugin_name) for arg in impl.argnames}
            try:
                impl.function(**kwargs)
            except MtlError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}\nRun without it: {DISABLE_ENV}={impl.plugin_name}"
                ) from None

    def owner_distribution(self, plugin_name: str) -> str | None:
        """The distribution that provided ``plugin_name``, None if registered in-process."""
        for info in self.plugins:
            if info.name == plugin_name:
                return info.distribution
        return None


def _entry_points() -> list[EntryPoint]:
    eps = entry_points(group=ENTRY_POINT_GROUP)
    # Sorted so the registration order, and with it every listing, is stable.
    return sorted(eps, key=lambda ep: ((ep.dist.name if ep.dist else "") != "mtlkit", ep.name))


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _plugin_name(plugin: Any) -> str:
    for attr in ("name", "__name__"):
        value = getattr(plugin, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(plugin).__name__
