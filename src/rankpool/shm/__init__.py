"""The same-host shared-memory plane for large buffers: segment layout and sending side (arena),
receiving side (reader), run names and sweeping (run), the front-end's side (plane).
"""
