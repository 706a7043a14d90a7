"""/etc/hvguest/hvguest.yaml: one section per service, every value checked.

The one entry point to the configuration. A service declares its section in its own
settings module with ``config_section``/``setting`` (``hvguest.configschema``); the
sections the file may hold are listed in ``hvguest.configsections``; the YAML is
parsed and checked by ``hvguest.configload``, within the bounds
``hvguest.configfile`` puts on the file. Every error names the file and the line.

The YAML parser is loaded only when the file says something: it costs a started
daemon about 0.8 MB of resident memory, for a file read at start (and on SIGHUP), and
the packaged file is all comments until an administrator changes a setting.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
from typing import Any

from hvguest.configfile import read_config_file
from hvguest.configschema import (
    LOG_LEVELS,
    Config,
    LogSettings,
    SectionInfo,
    Validator,
    config_section,
    section_info,
    setting,
)
from hvguest.configsections import default_config, registered_sections
from hvguest.errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "LogSettings",
    "SectionInfo",
    "Validator",
    "config_section",
    "default_config",
    "default_config_text",
    "load_config",
    "load_config_text",
    "registered_sections",
    "section_info",
    "setting",
    "validate_config",
]

log = logging.getLogger(__name__)

# Text that may be only comments: line feeds, printable ASCII and printable non-ASCII.
# Anything else (tabs, carriage returns and the other characters YAML takes as line
# breaks, control characters it refuses, a byte order mark) goes to the parser.
_NOT_PLAIN = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                        "\U00010000-\U0010ffff]")


def only_comments(text: str) -> bool:
    """``text`` is blank lines and ``#`` comment lines only: an empty YAML document."""
    if _NOT_PLAIN.search(text):
        return False
    return all(line.lstrip(" ")[:1] in ("", "#") for line in text.split("\n"))


def _parse(text: str, filename: str) -> tuple[Config, list[ConfigError]]:
    if only_comments(text):
        # No file, an empty one or the packaged one (all comments): the defaults,
        # without loading the YAML parser.
        return default_config(filename), []
    from hvguest.configload import parse_config

    return parse_config(text, filename)


def load_config_text(text: str, filename: str = "<config>") -> Config:
    config, errors = _parse(text, filename)
    if errors:
        raise errors[0]
    return config


def load_config(path: str | None, *, missing_ok: bool = True) -> Config:
    """Load and check ``path``; None or a missing file gives the defaults.

    Raises ConfigError (with ``where="file:line"``) for the first problem.
    """
    if path is None:
        return load_config_text("", "<defaults>")
    text = read_config_file(path)
    if text is None:
        if not missing_ok:
            raise ConfigError("no such file", where=path)
        log.debug("%s absent, using defaults", path)
        return load_config_text("", path)
    return load_config_text(text, path)


def validate_config(path: str, *, missing_ok: bool = True) -> list[str]:
    """Every problem in ``path`` as "file:line: message" lines (empty: valid)."""
    try:
        text = read_config_file(path)
    except ConfigError as exc:
        return [str(exc)]
    if text is None:
        return [] if missing_ok else [f"{path}: no such file"]
    _, errors = _parse(text, path)
    return [str(e) for e in errors]


# -- documentation --------------------------------------------------------------


def _render_value(value: Any) -> str:
    import yaml  # only packaging renders the defaults: no daemon pays for the emitter

    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def default_config_text() -> str:
    """Every registered section with its defaults and help, as commented YAML."""
    out = [
        "# hvguest configuration: one section per service.",
        "# Every setting below shows its default; uncomment and change what you need.",
    ]
    for name, info in registered_sections().items():
        out.append("")
        if info.help:
            out.append(f"# {info.help}")
        out.append(f"#{name}:")
        defaults = info.cls()
        for f in dataclasses.fields(info.cls):
            if not f.init:
                continue
            help_text = f.metadata.get("help", "")
            if help_text:
                for line in help_text.splitlines():
                    out.append(f"#  # {line}")
            out.append(f"#  {f.name}: {_render_value(getattr(defaults, f.name))}")
    return "\n".join(out) + "\n"
