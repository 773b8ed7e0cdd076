"""Per-device bearer tokens, stored only as SHA-256 hashes.

A token is 32 random bytes (`secrets.token_urlsafe`), so a plain SHA-256 is enough: there is no
password to guess, and a slow KDF would only make every request slower. The file holds one
`NAME sha256:HEX` line per device; it is written atomically with mode 600, in a folder made 700.
Checking a token hashes it once and compares it with every stored hash in constant time
(`hmac.compare_digest`). A running server re-reads the file when it changes (one stat per
request), so `token add` and `token remove` take effect at the next request, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from edge.errors import ConfigError
from edge.files import write_atomic

_LOGGER = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PREFIX = "sha256:"


def default_token_file() -> Path:
    """$XDG_CONFIG_HOME/glasses/offload_tokens (~/.config/glasses/offload_tokens)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "glasses" / "offload_tokens"


def hash_token(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The server's token file: device name → token hash."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        try:
            self._seen = self._stamp()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the token file ({exc.strerror})") from None
        self.hashes: dict[str, str] = self._read() if self._seen is not None else {}

    def _stamp(self) -> tuple[int, ...] | None:
        """What changes whenever the file is rewritten (write_atomic replaces it: a new inode); None if absent."""
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def refresh(self) -> None:
        """Re-read the file if it changed since it was last read. A file that no longer parses leaves
        the tokens as they were (logged once); a deleted file refuses every device."""
        try:
            stamp = self._stamp()
        except OSError as exc:
            _LOGGER.error("%s: cannot check the token file (%s); keeping its %d token(s)", self.path, exc.strerror, len(self.hashes))
            return
        if stamp == self._seen:
            return
        self._seen = stamp
        if stamp is None:
            self.hashes = {}
            _LOGGER.warning("%s was removed: every device is refused until `python -m edge token add NAME`", self.path)
            return
        try:
            hashes = self._read()
        except ConfigError as exc:
            _LOGGER.error("%s; keeping the %d token(s) read before", exc, len(self.hashes))
            return
        if hashes != self.hashes:
            _LOGGER.info("%s changed: %d device token(s) now", self.path, len(hashes))
        self.hashes = hashes

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the token file ({exc.strerror})") from None
        hashes: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, digest = line.partition(" ")
            digest = digest.strip()
            if not NAME_PATTERN.match(name) or not digest.startswith(_PREFIX) or len(digest) != len(_PREFIX) + 64:
                raise ConfigError(f"{self.path}:{number}: expected 'NAME sha256:HEX'; re-create it with `python -m edge token add`")
            hashes[name] = digest
        return hashes

    def add(self, name: str) -> str:
        """A new token for `name` (replacing an old one); only its hash is stored. Returns the token."""
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (e.g. glasses-anna)")
        token = secrets.token_urlsafe(32)
        self.hashes[name] = hash_token(token)
        self._save()
        return token

    def remove(self, name: str) -> bool:
        if self.hashes.pop(name, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # only a folder made here; an existing one is left as it is
        lines = ["# python -m edge token add NAME — one device per line: NAME sha256:HASH (tokens are never stored)"]
        lines += [f"{name} {digest}" for name, digest in sorted(self.hashes.items())]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"), mode=0o600)

    def check(self, token: str) -> str | None:
        """The device name for a presented token, or None. Every stored hash is compared (constant time)."""
        self.refresh()
        presented = hash_token(token)
        found = None
        for name, digest in self.hashes.items():
            if hmac.compare_digest(presented, digest):
                found = name
        return found
