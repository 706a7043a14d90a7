"""hvguest: Hyper-V integration services for Linux guests."""

__version__ = "0.1.0"
