"""Errors of workload input: a bad trace file, an unreadable length source."""

from __future__ import annotations

from ..errors import ConfigError


class WorkloadError(ConfigError):
    """A workload file or setting cannot be used; the message names the file, line and field."""
