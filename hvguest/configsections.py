"""The sections of /etc/hvguest/hvguest.yaml: every service's settings, named here.

The loader knows exactly these sections (an unknown one is an error naming them), and
every daemon validates the whole file, so each daemon imports every settings module
through this list. A new service adds its settings class here; a missing module is an
ImportError at start, never a section silently left out.
"""

from __future__ import annotations

from hvguest.configschema import Config, LogSettings, SectionInfo, section_info
from hvguest.direct.settings import DirectSettings
from hvguest.fcopy.settings import FcopySettings
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.kvp.settings import KvpSettings
from hvguest.vss.settings import VssSettings

SECTIONS: tuple[type, ...] = (
    LogSettings,
    KvpSettings,
    VssSettings,
    FcopySettings,
    HeartbeatSettings,
    DirectSettings,
)


def registered_sections() -> dict[str, SectionInfo]:
    """Every section by name, in name order."""
    infos = (section_info(cls) for cls in SECTIONS)
    return dict(sorted((info.name, info) for info in infos))


def default_config(path: str | None) -> Config:
    """Every section at its defaults (no file, or an empty one)."""
    return Config({name: info.cls() for name, info in registered_sections().items()}, path)
