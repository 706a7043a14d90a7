"""The "heartbeat" settings for hvguestctl's status, timesync and shutdown-hooks commands.

A bad configuration file is reported on stderr and the defaults are used: these
commands diagnose, and must work on a machine whose configuration is broken.
"""

from __future__ import annotations

import argparse
import os
import sys

from hvguest.config import load_config
from hvguest.errors import ConfigError
from hvguest.heartbeat.settings import HeartbeatSettings
from hvguest.text import write_line


def settings_for(args: argparse.Namespace, etc: str) -> HeartbeatSettings:
    path = getattr(args, "config", None) or os.path.join(etc, "hvguest.yaml")
    try:
        config = load_config(path)
    except ConfigError as exc:
        write_line(sys.stderr, f"hvguestctl: {exc} (using defaults)")
        return HeartbeatSettings()
    settings: HeartbeatSettings = config.get(HeartbeatSettings)
    return settings
