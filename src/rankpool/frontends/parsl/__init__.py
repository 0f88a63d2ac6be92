"""``ExtremeScaleExecutor``, the Parsl front-end: the executor, its blocks, checks, scaling and
views.
"""
