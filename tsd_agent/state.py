"""The agent's state file: who this printer is, its secret, and its access token.

The threat is another local user reading the device secret or the token. So the file is
created 0600 by ``os.open`` (never chmod-ed after writing: there is no moment when it is
readable by others), its folder 0700 when the agent creates it, every save writes a fresh
0600 file that atomically replaces the old one, and a symlinked, non-regular (a FIFO, say)
or foreign-owned file is refused. An existing file that others can read is fixed to 0600
with a warning, because its secrets may already have been read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_STATE_PATH = Path("~/.config/tsd-agent/state.json")
FILE_MODE = 0o600
FOLDER_MODE = 0o700
# The server's rule for device_id (tsd_server.api.request_body.DEVICE_ID_PATTERN).
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
MAX_STATE_BYTES = 64 * 1024


class StateError(Exception):
    """The state file cannot be used; the message says what to do."""


@dataclass
class AgentState:
    device_id: str
    device_secret: str
    # The access token and the server that issued it; the token is only ever sent there.
    access_token: str | None = None
    server: str | None = None
    linked_via: str | None = None

    @classmethod
    def new(cls) -> AgentState:
        """A fresh identity: a uuid4-based id and a 256-bit secret, both from the OS RNG."""
        return cls(device_id=f"tsd-{uuid.uuid4()}", device_secret=secrets.token_urlsafe(32))

    @classmethod
    def from_json(cls, data: object, path: Path) -> AgentState:
        if not isinstance(data, dict):
            raise StateError(f"state file {path} does not hold a JSON object; move it away "
                             "to start with a new printer identity")
        device_id, secret = data.get("device_id"), data.get("device_secret")
        if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
            raise StateError(f"state file {path} has no valid device_id; move it away to "
                             "start with a new printer identity")
        if not isinstance(secret, str) or len(secret) < 32:
            raise StateError(f"state file {path} has no valid device_secret; move it away to "
                             "start with a new printer identity")
        optional = {}
        for key in ("access_token", "server", "linked_via"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise StateError(f"state file {path}: '{key}' must be a string")
            optional[key] = value
        return cls(device_id=device_id, device_secret=secret, **optional)

    def forget_token(self) -> None:
        self.access_token = self.server = self.linked_via = None


def resolve_path(path: str | os.PathLike | None) -> Path:
    return Path(path if path is not None else DEFAULT_STATE_PATH).expanduser()


def load_or_create(path: Path, *, warn: Callable[[str], None]) -> AgentState:
    """The saved state, or a new identity saved right away (so the id never changes).

    Two first runs at once must end with one identity: the new file is published only if
    none exists yet, and the run that finds one already there uses that one instead.
    """
    try:
        return load(path, warn=warn)
    except FileNotFoundError:
        pass
    state = AgentState.new()
    if create(path, state):
        return state
    return load(path, warn=warn)


def load(path: Path, *, warn: Callable[[str], None]) -> AgentState:
    """Read the state file, refusing symlinks, non-regular files and foreign owners, fixing
    loose permissions.

    O_NONBLOCK: opening a FIFO (say another user's, at a shared path) for reading would
    otherwise wait for a writer before any check could refuse it. It changes nothing for a
    regular file, and the checks are on the file opened, so nothing can be swapped in.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise
    except OSError as error:
        if path.is_symlink():
            raise StateError(f"state file {path} is a symbolic link; refusing to follow it "
                             "(use --state with the real path)") from None
        if path.exists() and not path.is_file():  # a socket cannot even be opened
            raise StateError(not_regular(path)) from None
        raise StateError(f"cannot read state file {path}: {error.strerror}") from None
    try:
        raw = _read_checked(fd, path, warn)
    except OSError as error:  # after the open: fstat, read (an I/O error, say)
        raise StateError(f"cannot read state file {path}: {error.strerror}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise StateError(f"state file {path} is too large to be a tsd-agent state file")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise StateError(f"state file {path} is not valid JSON; move it away to start with a "
                         "new printer identity") from None
    return AgentState.from_json(data, path)


def _read_checked(fd: int, path: Path, warn: Callable[[str], None]) -> bytes:
    """The open file's bytes (at most MAX_STATE_BYTES + 1), once it is known to be a
    regular file of this user's; loose permissions are fixed where they can be."""
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a folder by raising
        os.close(fd)
        raise StateError(not_regular(path))
    with os.fdopen(fd, "rb") as fh:
        if info.st_uid != os.getuid():
            raise StateError(f"state file {path} belongs to another user (uid {info.st_uid}); "
                             "refusing to use secrets others control")
        loose = stat.S_IMODE(info.st_mode)
        if loose & 0o077:
            try:
                os.fchmod(fh.fileno(), FILE_MODE)
                fixed = "fixed to 0600"
            except OSError as error:  # a read-only mount, say: reading it still works
                fixed = f"could not fix it ({error.strerror})"
            warn(f"state file {path} was readable by other users (mode {loose:04o}); "
                 f"{fixed}. Its secret and token may have been read: unlink this printer on "
                 "the website and link it again.")
        return fh.read(MAX_STATE_BYTES + 1)


def not_regular(path: Path) -> str:
    return (f"state file {path} is not a regular file (a FIFO, device, socket or folder); "
            "refusing to use it (use --state with a file of your own)")


def save(path: Path, state: AgentState) -> None:
    """Write a new 0600 file next to the old one and rename it into place."""
    _publish(path, state, os.replace)


def create(path: Path, state: AgentState) -> bool:
    """Publish a first state file, complete, unless one exists: False if one did."""
    try:
        _publish(path, state, _link_unless_present)
    except FileExistsError:
        return False
    return True


NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def _link_unless_present(temporary: Path, path: Path) -> None:
    """Unlike a rename, a hard link never replaces a file. Where the filesystem has no hard
    links (FAT, some FUSE mounts), a rename after a check: two first runs at the same
    moment could still race there, as they always could before."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        if path.exists():
            raise FileExistsError(str(path)) from None
        os.replace(temporary, path)


def _publish(path: Path, state: AgentState, put: Callable[[Path, Path], None]) -> None:
    """Write a new 0600 temporary file next to ``path`` and ``put`` it there."""
    folder = path.parent
    if not folder.exists():
        try:
            # exist_ok: a first run at the same moment may have just created it.
            os.makedirs(folder, mode=FOLDER_MODE, exist_ok=True)
        except OSError as error:
            raise StateError(f"cannot create folder {folder}: {error.strerror}") from None
    temporary = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    payload = (json.dumps(asdict(state), indent=2) + "\n").encode("utf-8")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except OSError as error:
        raise StateError(f"cannot write state file in {folder}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        put(temporary, path)
    except FileExistsError:
        raise
    except OSError as error:
        raise StateError(f"cannot write state file {path}: {error.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable: until the folder is synced, a power cut (a printer's usual
    way to stop) can bring back the old file, without the token the server just issued.
    Best effort: the file itself is already written, and some filesystems cannot sync a
    folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
