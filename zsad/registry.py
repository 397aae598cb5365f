"""A generic registry of named component factories, with lazy, failure-isolated entry-point plugins.

One :class:`Registry` exists per component kind (backbones, prompts, heads, recipes; see :mod:`zsad.components`).
Built-ins register with a decorator; third-party packages register through the ``importlib.metadata`` entry-point
group of the kind (``zsad.backbones``, ``zsad.prompts``, ``zsad.heads``, ``zsad.recipes``)::

    # in a plugin's pyproject.toml
    [project.entry-points."zsad.backbones"]
    my_backbone = "my_package.backbone:MyBackbone"

Listing reads entry-point metadata only; a plugin is imported the first time its name is asked for. A plugin that
fails to import, or whose object breaks the kind's contract, raises :class:`~zsad.errors.PluginError` for that
name only: every other component keeps working, and :meth:`Registry.status` reports the failure.

Example:
    >>> reg = Registry("widgets", group=None)
    >>> @reg.register("round_widget")
    ... def make_round(radius=1.0):
    ...     return ("round", radius)
    >>> reg.create("round_widget", radius=2.0)
    ('round', 2.0)
    >>> reg.list()
    ['round_widget']
    >>> reg.get("rund_widget")
    Traceback (most recent call last):
    ...
    zsad.errors.UnknownComponentError: Unknown widgets 'rund_widget'. Did you mean: 'round_widget'? Known widgets: round_widget.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as importlib_metadata
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from zsad.errors import DuplicateComponentError, PluginError, UnknownComponentError

T = TypeVar("T")

__all__ = ["Registry", "ComponentInfo"]


@dataclass(frozen=True)
class ComponentInfo:
    """What a registry knows about one name without importing it."""

    name: str
    kind: str
    source: str  # "builtin" or "plugin"
    target: str  # "module:attr" for plugins, qualified name for built-ins
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"  # "ok", "not loaded", or "error: <reason>"
    description: str = ""


@dataclass
class _EntryPointRecord:
    entry_point: Any
    distribution: str | None
    version: str | None
    loaded: Any = None
    error: str | None = None
    attempted: bool = False


@dataclass
class Registry(Generic[T]):
    """A named collection of factories of one kind.

    Args:
        kind: a plural noun used in messages ("backbones").
        group: the entry-point group plugins register in, or ``None`` for no plugins.
        validator: called on every object loaded from a plugin; raises ``TypeError`` or ``ValueError`` with a
            reason when the object breaks the contract of the kind.
    """

    kind: str
    group: str | None = None
    validator: Callable[[Any], None] | None = None
    _items: dict[str, Any] = field(default_factory=dict)
    _descriptions: dict[str, str] = field(default_factory=dict)
    _plugins: dict[str, _EntryPointRecord] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- registration -----------------------------------------------------------------------------------------
    def register(
        self, name: str | None = None, *, override: bool = False, description: str | None = None
    ) -> Callable[[T], T]:
        """Decorator registering a factory (a class or a function) under *name* (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            self.add(name or getattr(obj, "__name__"), obj, override=override, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, override: bool = False, description: str | None = None) -> None:
        """Register *obj* under *name*; a duplicate name is refused unless ``override=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind[:-1]} name must be a non-empty string, got {name!r}.")
        with self._lock:
            if not override and (name in self._items or name in self._entry_points()):
                raise DuplicateComponentError(
                    f"{self.kind[:-1].capitalize()} '{name}' is already registered "
                    f"({self._describe_target(name)}). Pick another name, or pass override=True to replace it."
                )
            self._items[name] = obj
            doc = description if description is not None else _first_line(getattr(obj, "__doc__", None))
            if isinstance(obj, _LazyTarget):
                doc = description or ""
            self._descriptions[name] = doc

    def add_lazy(self, name: str, target: str, description: str, *, override: bool = False) -> None:
        """Register a built-in by import path ``"package.module:attr"``; it is imported on first use."""
        self.add(name, _LazyTarget(target), override=override, description=description)

    def unregister(self, name: str) -> None:
        """Remove a built-in or runtime registration (plugins stay listed by their metadata)."""
        with self._lock:
            self._items.pop(name, None)
            self._descriptions.pop(name, None)

    # -- lookup ------------------------------------------------------------------------------------------------
    def list(self) -> list[str]:
        """All names, built-in and plugin, sorted; plugins are listed without importing them."""
        return sorted(set(self._items) | set(self._entry_points()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or name in self._entry_points())

    def get(self, name: str) -> Any:
        """Return the factory registered under *name*, importing its plugin if needed."""
        with self._lock:
            if name in self._items:
                item = self._items[name]
                if isinstance(item, _LazyTarget):
                    item = self._items[name] = item.load()
                return item
            record = self._entry_points().get(name)
            if record is None:
                raise UnknownComponentError(self._unknown_message(name))
            return self._load(name, record)

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under *name* with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def describe(self, name: str) -> str:
        """One-line description of a component (its docstring's first line), without importing plugins."""
        if name in self._descriptions:
            return self._descriptions[name]
        record = self._entry_points().get(name)
        if record is None:
            raise UnknownComponentError(self._unknown_message(name))
        return _first_line(getattr(record.loaded, "__doc__", None)) if record.loaded is not None else ""

    def status(self, *, load: bool = False) -> list[ComponentInfo]:
        """Information about every name; with ``load=True`` plugins are imported to report their health."""
        infos = []
        for name in self.list():
            if name in self._items:
                obj = self._items[name]
                infos.append(
                    ComponentInfo(
                        name, self.kind, "builtin", _qualname(obj), description=self._descriptions.get(name, "")
                    )
                )
                continue
            record = self._entry_points()[name]
            if load and not record.attempted:
                try:
                    self._load(name, record)
                except PluginError:
                    pass
            if record.error:
                status = f"error: {record.error}"
            elif record.attempted:
                status = "ok"
            else:
                status = "not loaded"
            desc = _first_line(getattr(record.loaded, "__doc__", None)) if record.loaded is not None else ""
            infos.append(
                ComponentInfo(
                    name,
                    self.kind,
                    "plugin",
                    record.entry_point.value,
                    record.distribution,
                    record.version,
                    status,
                    desc,
                )
            )
        return infos

    def refresh(self) -> None:
        """Forget cached entry points (e.g. after installing a plugin in a running process)."""
        with self._lock:
            self._plugins = None

    # -- internals ---------------------------------------------------------------------------------------------
    def _entry_points(self) -> dict[str, _EntryPointRecord]:
        if self.group is None:
            return {}
        if self._plugins is None:
            with self._lock:
                if self._plugins is None:
                    found: dict[str, _EntryPointRecord] = {}
                    for ep in importlib_metadata.entry_points(group=self.group):
                        dist = getattr(ep, "dist", None)
                        found.setdefault(
                            ep.name,
                            _EntryPointRecord(
                                ep,
                                getattr(dist, "name", None) if dist is not None else None,
                                getattr(dist, "version", None) if dist is not None else None,
                            ),
                        )
                    self._plugins = found
        return self._plugins

    def _load(self, name: str, record: _EntryPointRecord) -> Any:
        if record.attempted:
            if record.error:
                raise PluginError(self._plugin_message(name, record))
            return record.loaded
        record.attempted = True
        try:
            obj = record.entry_point.load()
        except Exception as exc:  # a broken plugin must never break zsad or the other plugins
            record.error = f"import failed: {type(exc).__name__}: {exc}"
            raise PluginError(self._plugin_message(name, record)) from exc
        if self.validator is not None:
            try:
                self.validator(obj)
            except (TypeError, ValueError) as exc:
                record.error = f"contract violated: {exc}"
                raise PluginError(self._plugin_message(name, record)) from exc
        record.loaded = obj
        return obj

    def _plugin_message(self, name: str, record: _EntryPointRecord) -> str:
        dist = f" from distribution '{record.distribution}'" if record.distribution else ""
        return (
            f"The {self.kind[:-1]} plugin '{name}'{dist} (entry point '{record.entry_point.value}' in group "
            f"'{self.group}') cannot be used: {record.error}. Other {self.kind} are unaffected; fix or uninstall "
            f"that package (pip uninstall {record.distribution or '<package>'})."
        )

    def _unknown_message(self, name: str) -> str:
        known = self.list()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(known) if known else "(none)"
        return f"Unknown {self.kind} {name!r}.{hint} Known {self.kind}: {listing}."

    def _describe_target(self, name: str) -> str:
        if name in self._items:
            return f"built-in {_qualname(self._items[name])}"
        record = self._entry_points().get(name)
        return f"plugin entry point {record.entry_point.value}" if record else "unknown"


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def _qualname(obj: Any) -> str:
    if isinstance(obj, _LazyTarget):
        return obj.target
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{name}" if module else name


@dataclass(frozen=True)
class _LazyTarget:
    """A built-in registered as ``"module:attr"``: imported on first use, so listing imports nothing."""

    target: str

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
