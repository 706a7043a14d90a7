"""Adversarial tier: a hostile host and hostile local users (uid 65534)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "sysfs"))
