"""``python -m rankpool.mpi_pool --interchange tcp://HOST:PORT --block-id ID [...]``"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, prog: str = "python -m rankpool.mpi_pool") -> int:
    """Run the pool; ``prog``: the name its usage and errors give it (``rankpool pool``)."""
    from .config import parse
    cfg = parse(argv, prog)  # before MPI starts, so --help and bad options need no MPI
    from .hydra_notice import unblock
    unblock()  # the pool's processes take Hydra's notices as MPICH expects (see hydra_notice)
    from .keeper import keep
    link = keep() if cfg.keeper else None  # before MPI starts: the keeper never uses it
    from .program import run_pool
    return run_pool(cfg, link)


if __name__ == "__main__":
    sys.exit(main())
