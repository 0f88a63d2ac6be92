"""The interchange process: routes tasks from one front-end to many MPI pools, results back.

Start it with ``python -m rankpool.interchange`` (see :mod:`.process`), or in-process with
``Interchange(config).bind()`` and ``.run()``.
"""

from .config import InterchangeConfig
from .interchange import Interchange
from .process import serve

__all__ = ["Interchange", "InterchangeConfig", "serve"]
