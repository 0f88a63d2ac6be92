"""The front-ends: one engine (engine: futures, latch; settling: outcomes; cancelling: what
cancel() asks; lifetime: dropped executors and the program's exit; session: start-up; client:
the link to the interchange) behind ``Executor`` (executor, over base), ``CommExecutor``
(comm_executor, over base; comm_root: its thread) and ``ExtremeScaleExecutor`` (parsl/).
"""
