"""The one error type of the data layer.

Every problem with a dataset on disk (a missing folder, a label file that does
not match the images, a corrupt JPEG, a bad download) is reported as a
:class:`DataError` whose message names the file (and line, where there is one)
and says what to do, so the CLI can show it instead of a traceback.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset is missing, malformed or inconsistent; the message names the file."""
