"""Rank placement on rank 0, pure logic without MPI: task shapes, the rank inventory, pending
queues, the shared-task hot path, and the scheduler over them.
"""
