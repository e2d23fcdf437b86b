"""The package version, below every layer so any of them can name it (a user agent, a banner)."""

__version__ = "0.1.0"
