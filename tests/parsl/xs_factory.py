"""``xs()``: the ExtremeScaleExecutor the tests of this directory load (local blocks, fast
liveness). A module of its own, so that test files import it by a name no other directory uses.
"""

from __future__ import annotations

from typing import Any

from rankpool import ExtremeScaleExecutor
from rankpool.frontends.parsl.executor import local_provider

#: fast liveness for tests: a killed pool is declared lost within about 3 s
FAST = {"heartbeat_period": 0.5, "heartbeat_threshold": 3.0}


def xs(*, ranks_per_node: int = 2, init_blocks: int = 1, min_blocks: int = 0, max_blocks: int = 1,
       provider: Any = None, **kwargs: Any) -> ExtremeScaleExecutor:
    """An executor of local blocks with test-friendly heartbeats."""
    if provider is None:
        provider = local_provider(init_blocks=init_blocks, min_blocks=min_blocks,
                                  max_blocks=max_blocks)
    kwargs.setdefault("label", "xs")
    return ExtremeScaleExecutor(provider=provider, ranks_per_node=ranks_per_node,
                                **{**FAST, **kwargs})
