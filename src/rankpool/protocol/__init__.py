"""The wire protocol: message types and version checks (messages), the header codec (wire), task
and result batches (batches). No mpi4py, no zmq.
"""
