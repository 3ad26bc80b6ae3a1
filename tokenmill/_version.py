"""The one place the tokenmill version is written (read by the build and at run time)."""

__version__ = "0.1.0"
