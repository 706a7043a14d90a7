"""How a service declares its section of /etc/hvguest/hvguest.yaml, and what a loaded
configuration is.

Each service declares its section as a frozen dataclass in its own settings module;
fields carry defaults and, through ``setting()``, help text, bounds, choices or a
validator. ``@config_section("vss")`` names the section; the list of sections the
loader knows is ``hvguest.configsections.SECTIONS``, written out by hand.

    @config_section("vss", help="Volume snapshots")
    @dataclass(frozen=True)
    class VssSettings:
        hook_timeout: float = setting(30.0, help="seconds per hook", min=1, max=3600)

This module imports no service: settings modules import it, the loader imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")

Validator = Callable[[Any], "str | None"]

# The attribute config_section() gives the class: the section's name and help.
_INFO_ATTRIBUTE = "__config_section__"


@dataclass(frozen=True)
class SectionInfo:
    name: str
    cls: type
    help: str


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    min: float | None = None,
    max: float | None = None,
    choices: Iterable[Any] | None = None,
    validate: Validator | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with help text and checks.

    ``validate(value)`` returns an error text (or raises ValueError) for a bad
    value; ``min``/``max`` bound numbers (and lengths of strings and lists).
    """
    metadata = {
        "help": help,
        "min": min,
        "max": max,
        "choices": tuple(choices) if choices is not None else None,
        "validate": validate,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def config_section(name: str, *, help: str = "") -> Callable[[type[T]], type[T]]:
    """Mark a settings dataclass as section ``name`` of the config file."""

    def mark(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(frozen=True)(cls)
        for f in dataclasses.fields(cast(Any, cls)):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"config section {name}: field {f.name} needs a default")
        doc = help or (cls.__doc__ or "").strip().split("\n")[0]
        setattr(cls, _INFO_ATTRIBUTE, SectionInfo(name, cls, doc))
        return cls

    return mark


def section_info(cls: type) -> SectionInfo:
    """The name and help ``config_section`` gave ``cls``."""
    info = cls.__dict__.get(_INFO_ATTRIBUTE)
    if not isinstance(info, SectionInfo):
        raise TypeError(f"{cls.__name__} is not marked with @config_section")
    return info


@config_section("log", help="Logging of every hvguest daemon")
@dataclass(frozen=True)
class LogSettings:
    level: str = setting(
        "info", help="minimum level logged: debug, info, warning or error", choices=LOG_LEVELS
    )


class Config:
    """The validated configuration: one settings object per section."""

    def __init__(
        self,
        sections: dict[str, Any],
        path: str | None = None,
        lines: dict[str, int] | None = None,
    ) -> None:
        self._sections = sections
        self.path = path
        self._lines = lines or {}

    def section(self, name: str) -> Any:
        """The settings object of section ``name`` (defaults when absent)."""
        try:
            return self._sections[name]
        except KeyError:
            raise KeyError(f"no config section {name!r} is registered") from None

    def get(self, cls: type[T]) -> T:
        """Typed access: ``config.get(VssSettings)``."""
        for value in self._sections.values():
            if type(value) is cls:
                return value  # type: ignore[no-any-return,unused-ignore]
        raise KeyError(f"{cls.__name__} is not a registered config section")

    @property
    def log(self) -> LogSettings:
        return self.get(LogSettings)

    def where(self, section: str, key: str | None = None) -> str | None:
        """Where a section or key was given ("file:line"), for later errors."""
        dotted = section if key is None else f"{section}.{key}"
        line = self._lines.get(dotted)
        if self.path is None or line is None:
            return None
        return f"{self.path}:{line}"
