"""The YAML of the configuration within bounds, before any value is built from it.

The event stream is checked for depth and alias count without recursion; the composed
document for alias bombs and self-referencing aliases. Past a bound, ``Unbounded``,
which the loader reports as a ``ConfigError`` with the line.
"""

from __future__ import annotations

import yaml

# A few levels deep and a few aliases are fine, an alias bomb is not.
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
