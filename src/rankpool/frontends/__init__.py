"""The front-ends: one engine (engine: futures, settle, latch; session: start-up; client: the
link to the interchange) behind ``Executor`` (executor, over base), ``CommExecutor``
(comm_executor, over base) and ``ExtremeScaleExecutor`` (parsl/).
"""
