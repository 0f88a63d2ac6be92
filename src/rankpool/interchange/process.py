"""The interchange as a process: logging, the ports line on stdout, signals, then the loop.

A front-end starts ``python -m rankpool.interchange``, writes an :class:`InterchangeConfig` as
JSON on its stdin and reads one line back, ``{"pool_port": P, "client_port": C,
"command_port": M}``, before it connects. Everything else the process says goes to its log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import IO, Any

from ..private_files import PrivateFileHandler, private_dir
from .config import InterchangeConfig
from .interchange import Interchange

LOG_FILE = "interchange.log"
_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def configure_logging(config: InterchangeConfig) -> logging.Handler:
    """Send the package's records to ``run_dir/interchange.log`` (or stderr) at ``log_level``."""
    handler: logging.Handler
    if config.run_dir:
        private_dir(config.run_dir)
        handler = PrivateFileHandler(os.path.join(config.run_dir, LOG_FILE))
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger("rankpool")
    root.addHandler(handler)
    root.setLevel(config.level)
    return handler


def serve(config: InterchangeConfig, out: IO[str]) -> int:
    """Bind, announce the ports on ``out``, and route until stopped; return an exit status."""
    configure_logging(config)
    ix = Interchange(config)
    pool_port, client_port, command_port = ix.bind()
    out.write(json.dumps({"pool_port": pool_port, "client_port": client_port,
                          "command_port": command_port}) + "\n")
    out.flush()
    if threading.current_thread() is threading.main_thread():
        def _on_signal(signum: int, frame: Any) -> None:
            logging.getLogger(__name__).warning("signal %d received; stopping", signum)
            ix.stop()
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    ix.run()
    return 0


def read_config(stream: IO[str]) -> InterchangeConfig:
    """Read one JSON object (possibly spread over lines) from ``stream``; EOF is not needed."""
    text = ""
    while True:
        line = stream.readline()
        text += line
        if not line:
            break
        try:
            json.loads(text)
        except ValueError:
            continue
        break
    if not text.strip():
        raise ValueError("no interchange configuration on stdin")
    return InterchangeConfig.from_json(text)
