"""``python -m facecraft.cli``: the same command as ``facecraft``."""

from facecraft.cli import app

app()
