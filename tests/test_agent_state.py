"""The agent's state file: created private, kept private, never trusted when foreign."""

from __future__ import annotations

import errno
import io
import json
import os
import stat

import pytest

from tsd_agent import messages as m
from tsd_agent import state as agent_state
from tsd_agent.cli import main
from tsd_agent.state import AgentState, StateError, load, load_or_create, save


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def warnings_seen():
    return []


def test_new_state_is_created_0600_in_a_0700_folder(tmp_path, warnings_seen):
    path = tmp_path / "config" / "tsd-agent" / "state.json"
    created = load_or_create(path, warn=warnings_seen.append)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert warnings_seen == []
    data = json.loads(path.read_text())
    assert data["device_id"] == created.device_id
    assert agent_state.DEVICE_ID_PATTERN.fullmatch(created.device_id)
    assert len(created.device_secret) >= 43  # token_urlsafe(32): 256 bits


def test_the_file_is_never_readable_by_others_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "state.json"
        save(path, AgentState.new())
        assert mode(path) == 0o600
        save(path, AgentState.new())  # an overwrite is a fresh 0600 file too
        assert mode(path) == 0o600
    finally:
        os.umask(old)


def test_identity_is_generated_once_and_kept(tmp_path, warnings_seen):
    path = tmp_path / "state.json"
    first = load_or_create(path, warn=warnings_seen.append)
    second = load_or_create(path, warn=warnings_seen.append)
    assert (first.device_id, first.device_secret) == (second.device_id, second.device_secret)
    assert AgentState.new().device_secret != first.device_secret


def test_token_round_trip_and_no_leftover_temporary_files(tmp_path, warnings_seen):
    path = tmp_path / "state.json"
    current = load_or_create(path, warn=warnings_seen.append)
    current.access_token, current.server, current.linked_via = "tsd_at_x" * 4, "http://s", "qr"
    save(path, current)
    again = load(path, warn=warnings_seen.append)
    assert again == current
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_world_readable_existing_file_is_fixed_with_a_warning(tmp_path, warnings_seen):
    path = tmp_path / "state.json"
    save(path, AgentState.new())
    os.chmod(path, 0o644)
    load(path, warn=warnings_seen.append)
    assert mode(path) == 0o600
    assert len(warnings_seen) == 1 and "0644" in warnings_seen[0]
    assert "link it again" in warnings_seen[0]


def test_group_readable_file_is_fixed_too(tmp_path, warnings_seen):
    path = tmp_path / "state.json"
    save(path, AgentState.new())
    os.chmod(path, 0o640)
    load(path, warn=warnings_seen.append)
    assert mode(path) == 0o600 and warnings_seen


def test_symlinked_state_file_is_refused(tmp_path, warnings_seen):
    real = tmp_path / "elsewhere.json"
    save(real, AgentState.new())
    link = tmp_path / "state.json"
    link.symlink_to(real)
    with pytest.raises(StateError, match="symbolic link"):
        load(link, warn=warnings_seen.append)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_state_file_owned_by_another_user_is_refused(tmp_path, warnings_seen):
    path = tmp_path / "state.json"
    save(path, AgentState.new())
    os.chown(path, 65534, 65534)
    with pytest.raises(StateError, match="another user"):
        load(path, warn=warnings_seen.append)


@pytest.mark.parametrize("content, problem", [
    ("not json", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"device_id": "short", "device_secret": "' + "s" * 43 + '"}', "device_id"),
    ('{"device_id": "has spaces in it", "device_secret": "' + "s" * 43 + '"}', "device_id"),
    ('{"device_id": "tsd-12345678", "device_secret": "tiny"}', "device_secret"),
    ('{"device_id": "tsd-12345678", "device_secret": "' + "s" * 43 + '", "access_token": 5}',
     "access_token"),
])
def test_damaged_state_is_refused_with_a_clear_message(tmp_path, warnings_seen, content, problem):
    path = tmp_path / "state.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    with pytest.raises(StateError, match=problem):
        load(path, warn=warnings_seen.append)
    assert path.read_text() == content  # refused, not overwritten


def test_a_folder_that_cannot_be_created_is_a_state_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot create folder"):
        save(blocker / "sub" / "state.json", AgentState.new())


def test_default_path_is_under_the_users_config_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert agent_state.resolve_path(None) == tmp_path / ".config" / "tsd-agent" / "state.json"
    assert agent_state.resolve_path("~/x.json") == tmp_path / "x.json"


def test_a_deeply_nested_state_file_is_refused_in_one_line(tmp_path):
    """json.loads raises RecursionError, not ValueError, for arrays nested thousands deep:
    still a damaged file (exit 10), never a traceback."""
    path = tmp_path / "s.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("[" * 30000 + "]" * 30000)
    err = io.StringIO()
    code = main(["--state", str(path), "whoami"], stdout=io.StringIO(), stderr=err)
    assert code == m.EXIT_STATE, err.getvalue()
    assert err.getvalue().count("\n") == 1 and "is not valid JSON" in err.getvalue()


def test_a_loose_state_file_that_cannot_be_fixed_is_still_read(tmp_path, monkeypatch):
    """A 0644 file on a read-only mount: the warning says it could not be fixed, and the
    file is used (whoami writes nothing); a command that links then stops before it sends
    anything, as the file cannot take a token."""
    path = tmp_path / "s.json"
    load_or_create(path, warn=pytest.fail)
    os.chmod(path, 0o644)

    def read_only(*_args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(agent_state.os, "fchmod", read_only)
    err = io.StringIO()
    code = main(["--state", str(path), "whoami"], stdout=io.StringIO(), stderr=err)
    assert code == m.EXIT_NOT_LINKED, err.getvalue()
    assert "could not fix it (Read-only file system)" in err.getvalue()
    assert mode(path) == 0o644


def test_a_read_error_after_the_open_is_a_state_error(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    load_or_create(path, warn=pytest.fail)

    def failing_fstat(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as patched, pytest.raises(StateError, match="Input/output"):
        patched.setattr(agent_state.os, "fstat", failing_fstat)
        load(path, warn=pytest.fail)


def test_a_save_syncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    """Without the folder's fsync a power cut can undo the rename: the printer would wake
    with its old, unlinked state while the website lists it."""
    path = tmp_path / "s.json"
    state = load_or_create(path, warn=pytest.fail)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(agent_state.os, "fsync", spy)
    state.access_token, state.server = "tsd_at_x", "http://127.0.0.1:1"
    save(path, state)
    assert synced == ["file", "folder"], synced
    assert json.loads(path.read_text())["access_token"] == "tsd_at_x"
