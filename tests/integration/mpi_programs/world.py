"""An MPI program for the application-task tests (run as ``python -m mpi4py world.py``): each
rank prints ``rank R size S host H pid P`` and the launch variables it sees (and writes the
same to ``said-R.txt`` in the directory ``argv[3]`` when given), then sleeps ``argv[2]``
seconds; rank 0 exits with the code ``argv[1]``. Started by ``MPI_Comm_spawn``, it joins a barrier
on its parent intercommunicator at the end, as spawn mode asks of a program."""

import os
import socket
import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
said = (f"rank {comm.Get_rank()} size {comm.Get_size()} host {host} pid {os.getpid()} "
        f"opt=[{os.environ.get('RP_APP_OPTION', '')}]")
print(said, flush=True)
if len(sys.argv) > 3:
    with open(os.path.join(sys.argv[3], f"said-{comm.Get_rank()}.txt"), "w") as f:
        f.write(said)
if len(sys.argv) > 2 and float(sys.argv[2]) > 0:
    time.sleep(float(sys.argv[2]))
comm.Barrier()
parent = MPI.Comm.Get_parent()
if parent != MPI.COMM_NULL:  # started by MPI_Comm_spawn: tell the parent it is done
    parent.Barrier()
    parent.Disconnect()
code = int(sys.argv[1]) if len(sys.argv) > 1 else 0
if comm.Get_rank() == 0 and code:
    print(f"rank 0 fails with {code}", file=sys.stderr, flush=True)
    sys.exit(code)
