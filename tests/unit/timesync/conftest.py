"""The fixture machine trees (tests/machine_tree.py)."""

from machine_tree import builder, machine, restore_logging  # noqa: F401
