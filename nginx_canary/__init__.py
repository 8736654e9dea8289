"""nginx-canary: canary releases for plain open-source nginx on ordinary hosts."""

__version__ = "0.1.0"
