"""The ``facecraft`` command: parse arguments into configs, call ``experiments``, print; no logic
here.

One module per group of commands; importing this package registers them all on :data:`app`, in the
order ``--help`` lists them.
"""

from facecraft.cli import study, release, data, bench  # noqa: I001, F401  (registers the commands)
from facecraft.cli._common import app

__all__ = ["app"]
