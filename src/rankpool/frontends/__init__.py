"""The front-ends: one engine (engine, client) behind ``Executor`` (executor), ``CommExecutor``
(comm_executor) and ``ExtremeScaleExecutor`` (parsl/).
"""
