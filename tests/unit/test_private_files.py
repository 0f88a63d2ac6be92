"""Private run directories and files (rankpool.private_files), whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankpool.errors import RunDirError
from rankpool.launchers.rundir import make_run_dir, write_interchange_info
from rankpool.private_files import PrivateFileHandler, open_private, private_dir, write_private


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive: modes must not depend on it
    yield
    os.umask(old)


def test_run_directories_are_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = make_run_dir(), make_run_dir()
    assert first.endswith("rankpool-runs/000") and second.endswith("rankpool-runs/001")
    assert mode(first) == mode(second) == mode(tmp_path / "rankpool-runs") == 0o700
    named = make_run_dir(str(tmp_path / "a" / "b"))
    assert mode(named) == 0o700


def test_an_existing_directory_is_tightened_or_refused_saying_why(tmp_path: Path) -> None:
    (tmp_path / "readable").mkdir(mode=0o755)
    assert private_dir(str(tmp_path / "readable")) and mode(tmp_path / "readable") == 0o700
    (tmp_path / "shared").mkdir(mode=0o777)
    with pytest.raises(RunDirError, match="writable by its group or by others.*0777"):
        make_run_dir(str(tmp_path / "shared"))
    assert mode(tmp_path / "shared") == 0o777  # refused, not silently changed
    (tmp_path / "link").symlink_to(tmp_path / "readable")
    with pytest.raises(RunDirError, match="symbolic link"):
        make_run_dir(str(tmp_path / "link"))
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        make_run_dir(str(tmp_path / "file"))


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(RunDirError, match="belongs to uid 65534, not to this user"):
        make_run_dir(str(theirs))


def test_files_are_0600_scripts_0700_and_links_are_never_followed(tmp_path: Path) -> None:
    info = write_interchange_info(str(tmp_path), {"pool_port": 1, "client_port": 2,
                                                  "command_port": 3}, "tcp://h:1")
    assert mode(info) == 0o600
    script = write_private(str(tmp_path / "s.sh"), "#!/bin/sh\n", mode=0o700)
    assert mode(script) == 0o700
    target = tmp_path / "target"
    target.write_text("precious")
    target.chmod(0o644)
    (tmp_path / "planted").symlink_to(target)
    with pytest.raises(RunDirError, match="link there is refused"):
        open_private(str(tmp_path / "planted"))
    assert target.read_text() == "precious" and mode(target) == 0o644
    (tmp_path / "x.1.tmp").write_text("")  # a temporary name taken: O_EXCL refuses it
    with pytest.raises(RunDirError):
        open_private(str(tmp_path / "x.1.tmp"), exclusive=True)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(f".{os.getpid()}.tmp")]


def test_an_old_log_is_appended_to_and_made_private(tmp_path: Path) -> None:
    log_path = tmp_path / "interchange.log"
    log_path.write_text("earlier\n")
    log_path.chmod(0o644)
    handler = PrivateFileHandler(str(log_path))
    logger = logging.getLogger("rankpool.test-private")
    logger.addHandler(handler)
    try:
        logger.warning("later")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert log_path.read_text().splitlines() == ["earlier", "later"] and mode(log_path) == 0o600
