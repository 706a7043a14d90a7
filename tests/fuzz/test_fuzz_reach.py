"""Every decoder in hvguest.wire is reached by some fuzz target: a decoder added
without a target fails here."""

from __future__ import annotations

import inspect
import pkgutil
import random
import sys
from importlib import import_module
from types import CodeType, FrameType
from typing import Any

import hvguest.wire
from fuzz.engine import run_case
from fuzz.targets import TARGETS


def wire_decoders() -> dict[str, CodeType]:
    """decode*/parse*/read_from/from_packed functions and classmethods of hvguest.wire."""
    found: dict[str, CodeType] = {}
    wanted = ("decode", "parse_", "read_from", "from_packed", "split_packet")
    for info in pkgutil.iter_modules(hvguest.wire.__path__):
        module = import_module(f"hvguest.wire.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                if name.startswith(wanted):
                    found[f"{info.name}.{name}"] = obj.__code__
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for attr in ("decode", "read_from", "from_packed"):
                    method = inspect.getattr_static(obj, attr, None)
                    if isinstance(method, classmethod):
                        found[f"{info.name}.{name}.{attr}"] = method.__func__.__code__
    return found


def test_every_wire_decoder_is_reached_by_a_target() -> None:
    decoders = wire_decoders()
    assert len(decoders) >= 25, sorted(decoders)
    wanted = set(decoders.values())
    reached: set[CodeType] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in wanted:
            reached.add(frame.f_code)

    rng = random.Random(7)
    inputs = [rng.randbytes(rng.randrange(0, 8000)) for _ in range(20)]
    sys.setprofile(profile)
    try:
        for target in TARGETS.values():
            if not target.selftest:
                for data in (*target.seeds, *inputs):
                    run_case(target, data)
    finally:
        sys.setprofile(None)
    missed = sorted(name for name, code in decoders.items() if code not in reached)
    assert not missed, f"decoders no fuzz target reaches: {missed}"
