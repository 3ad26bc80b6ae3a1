"""Errors tokenmill raises for bad input, so callers can tell them from bugs."""

from __future__ import annotations


class TokenmillError(Exception):
    """Base class of every error tokenmill raises on purpose."""


class ConfigError(TokenmillError, ValueError):
    """A scenario, preset or file is invalid; the message names the field, value and fix."""


class CapacityError(ConfigError):
    """The model does not fit in the memory of the chosen chips and plan."""
