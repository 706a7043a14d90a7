"""Reading the configuration file within bounds, before anything is built from it.

Every way a file can hurt the loader ends here as an error the loader turns into a
``ConfigError`` naming the file: only a regular file is read (a FIFO or a device
would block or never end), at most MAX_CONFIG_BYTES of it, strict UTF-8; the YAML
event stream is checked for depth and alias count without recursion; the composed
document for alias bombs and self-referencing aliases.
"""

from __future__ import annotations

import os
import stat

import yaml

from hvguest.errors import ConfigError

# Bounds on the file itself, checked before anything is built from it. The packaged
# file is ~6 KiB and a few levels deep; a few aliases are fine, an alias bomb is not.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_ALIASES = 100
MAX_NODES = 10_000  # after expanding aliases


class Unbounded(Exception):
    """The document is past one of the bounds (depth, aliases, expanded size)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def check_shape(text: str) -> None:
    """Depth and alias count from the event stream, before any node is built.

    The parser keeps its own stack (no recursion), so this is safe on any input;
    composing or converting a 5000-level document would exhaust Python's stack.
    """
    depth = 0
    aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise Unbounded(f"nested deeper than {MAX_DEPTH} levels", _line(event))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise Unbounded(f"more than {MAX_ALIASES} aliases (*name)", _line(event))


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node) -> None:
    """Refuse alias bombs ("billion laughs") and self-referencing aliases: the size of
    the document with every alias expanded, computed without expanding (iteratively,
    each distinct node once)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            open_nodes.discard(key)
            size = 1 + sum(sizes[id(c)] for c in _children(node))
            if size > MAX_NODES:
                raise Unbounded(f"expands to more than {MAX_NODES} values through aliases",
                                 node.start_mark.line + 1)
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise Unbounded("an alias refers to a collection that contains it",
                             node.start_mark.line + 1)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def read_config_file(path: str) -> str | None:
    """The file's text; None if absent. Only a regular file is read (a FIFO or a
    device would block or never end), and at most MAX_CONFIG_BYTES of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a regular file", where=path)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes ({st.st_size})", where=path)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_CONFIG_BYTES:  # grew while being read
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", where=path)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=path) from exc
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
            where=path,
        ) from exc
