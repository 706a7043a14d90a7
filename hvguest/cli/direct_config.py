"""The ``direct:`` section of hvguest.yaml, rewritten by ``hvguestctl direct enable``
and ``disable``.

Only that section's lines change: every other line (other sections, comments, the
packaged commented defaults) stays as it was. The file must be valid before (a
broken file is reported, not rewritten), the new text is loaded again and must give
exactly the settings intended, and it replaces the old file atomically with the
old file's mode. Comments inside the old ``direct:`` block are not kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from typing import Any

from hvguest.config import load_config_text, only_comments
from hvguest.configfile import read_config_file
from hvguest.direct.settings import DirectSettings
from hvguest.errors import ConfigError, LocalUsageError
from hvguest.files import atomic_write

SECTION = "direct"


def render_section(settings: DirectSettings) -> list[str]:
    """The section as block YAML lines; strings are quoted (a user named "no" or
    "null" must stay a string)."""
    lines = [f"{SECTION}:"]
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = json.dumps(str(value))
        lines.append(f"  {f.name}: {text}")
    return lines


def _section_lines(text: str, filename: str) -> tuple[int, int] | None:
    """[first, end) line numbers (0-based) of the top-level ``direct:`` entry, or None."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
        return None
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise LocalUsageError(f"{filename}: the sections are not a block mapping; "
                              f"add the {SECTION}: section by hand")
    for knode, vnode in root.value:
        if isinstance(knode, yaml.ScalarNode) and knode.value == SECTION:
            first = knode.start_mark.line
            if knode.start_mark.column != 0:
                raise LocalUsageError(f"{filename}:{first + 1}: {SECTION}: is indented; "
                                      "edit the section by hand")
            end = vnode.end_mark.line + (1 if vnode.end_mark.column > 0 else 0)
            return first, max(end, first + 1)
    return None


def updated_text(text: str, filename: str, changes: dict[str, Any]) -> tuple[str, DirectSettings]:
    """``text`` with the direct section set to its current settings plus ``changes``.
    ConfigError: the file is invalid now; LocalUsageError: the change is not valid."""
    current = load_config_text(text, filename).get(DirectSettings)
    try:
        wanted = dataclasses.replace(current, **changes)
    except (TypeError, ValueError) as exc:
        raise LocalUsageError(f"{SECTION}: {exc}") from None
    block = render_section(wanted)
    lines = text.split("\n")
    found = None if only_comments(text) else _section_lines(text, filename)
    if found is None:
        if lines and lines[-1] == "":
            lines.pop()
        new_lines = [*lines, *block, ""]
    else:
        first, end = found
        new_lines = [*lines[:first], *block, *lines[end:]]
        if new_lines[-1] != "":
            new_lines.append("")
    new_text = "\n".join(new_lines)
    try:
        check = load_config_text(new_text, filename).get(DirectSettings)
    except ConfigError as exc:
        raise LocalUsageError(f"rewriting the {SECTION} section would break {filename} "
                              f"({exc}); edit it by hand") from None
    if check != wanted:
        raise LocalUsageError(f"rewriting the {SECTION} section of {filename} did not give "
                              "the settings intended; edit it by hand")
    return new_text, wanted


def update_config_file(path: str, changes: dict[str, Any]) -> DirectSettings:
    """Rewrite ``path``'s direct section (the file is created, 0644, when absent)."""
    text = read_config_file(path)
    mode = 0o644
    if text is not None:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    new_text, settings = updated_text(text or "", path, changes)
    if new_text != text:
        atomic_write(path, new_text, mode=mode)
    return settings
