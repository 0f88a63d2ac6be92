"""What a task is made of, on both ends: serialization, comm injection, the resource specification,
node resources. No mpi4py, no zmq.
"""
