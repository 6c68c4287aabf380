"""Who may connect to the local platform: API keys, device tokens, quickstart (W5, W6, W41).

Applications (``a:``/``A:``) log in with username = API key ``a-{org}-{rest}`` and password =
its token; the org is the key's, and must be the client ID's (W5). Devices and gateways
(``d:``/``g:``) log in with username ``use-token-auth`` and their own token (W6). Quickstart
clients (org ``quickstart``) need no credentials at all, when quickstart is on (W41).

Where the table comes from:

* ``--api-key a-abc123-xxxxxxxx:TOKEN`` (repeatable): one application key and its token. The
  key never contains ``:``, so the token is everything after the first one.
* ``--keys FILE``: a JSON object with two optional members, nothing else::

      {
        "api_keys":      {"a-abc123-a84ps90Ajs": "MP$08VKz!8rXwnR-Q*"},
        "device_tokens": {"d:abc123:sensor:s-001": "tok-s-001",
                          "g:abc123:gw:gw-1":      "tok-gw-1"}
      }

  ``api_keys`` maps API keys to tokens; ``device_tokens`` maps device (``d:``) and gateway
  (``g:``) client IDs to tokens. Tokens are non-empty strings without whitespace.
* ``--accept-any-key``: development mode. Any token is accepted, but the shape the real
  platform insists on is still checked (an application's key must be a well-formed key of
  the client's org; devices must say ``use-token-auth``; a password must be sent), so a
  client that works here has a chance to work there.
* ``--quickstart``: also accept the ``quickstart`` org, without authentication.

Tokens are compared in constant time, and an unknown key is compared against a dummy so
that timing does not tell which keys exist.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from worker.errors import ConfigError, IdentityError
from worker.identity import (
    API_KEY_RULE,
    QUICKSTART_ORG,
    ClientClass,
    ClientId,
    org_from_api_key,
    parse_client_id,
)

USE_TOKEN_AUTH: Final = "use-token-auth"
TOKEN_RULE: Final = "a non-empty string without whitespace"
KEYS_FILE_MEMBERS: Final = ("api_keys", "device_tokens")
_DUMMY: Final = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class Credentials:
    """The platform's credentials table. ``repr`` and :meth:`describe` mask every token."""

    #: API key -> token (UTF-8)
    api_keys: Mapping[str, bytes] = field(default_factory=dict)
    #: ``d:``/``g:`` client ID -> token (UTF-8)
    device_tokens: Mapping[str, bytes] = field(default_factory=dict)
    accept_any_key: bool = False
    quickstart: bool = False

    def __repr__(self) -> str:
        return (
            f"Credentials(orgs={sorted(self.orgs)}, api_keys={sorted(self.api_keys)}, "
            f"device_tokens={len(self.device_tokens)}, accept_any_key={self.accept_any_key}, "
            f"quickstart={self.quickstart})"
        )

    @property
    def orgs(self) -> frozenset[str]:
        """Every org with at least one credential (plus ``quickstart`` when it is on)."""
        orgs = {org_from_api_key(key) for key in self.api_keys}
        orgs.update(client_id.split(":")[1] for client_id in self.device_tokens)
        if self.quickstart:
            orgs.add(QUICKSTART_ORG)
        return frozenset(orgs)

    def authenticate(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> bool:
        """True when this CONNECT's credentials admit ``client_id`` (CONNACK 0, else 5)."""
        return self.check(client_id, username, password) is None

    def check(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> str | None:
        """None when admitted, else why not, for logs (never containing the token)."""
        if client_id.org == QUICKSTART_ORG:
            return None if self.quickstart else "quickstart is not enabled (--quickstart)"
        if client_id.is_application:
            return self._check_app(client_id, username, password)
        return self._check_device(client_id, username, password)

    def _check_app(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> str | None:
        if username is None:
            return "an application must send its API key as the username"
        try:
            key_org = org_from_api_key(username)
        except IdentityError:
            return f"username {_short(username)!r} is not an API key ({API_KEY_RULE})"
        if key_org != client_id.org:
            return f"API key of org {key_org!r} used by a client of org {client_id.org!r}"
        if password is None:
            return "an application must send its API token as the password"
        expected = self.api_keys.get(username)
        matches = _same(password, expected)
        if self.accept_any_key or matches:
            return None
        return "unknown API key" if expected is None else "wrong token for this API key"

    def _check_device(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> str | None:
        what = "gateway" if client_id.cls is ClientClass.GATEWAY else "device"
        if username != USE_TOKEN_AUTH:
            return f"a {what} must send the username {USE_TOKEN_AUTH!r}"
        if password is None:
            return f"a {what} must send its token as the password"
        expected = self.device_tokens.get(str(client_id))
        matches = _same(password, expected)
        if self.accept_any_key or matches:
            return None
        return f"unregistered {what}" if expected is None else f"wrong token for this {what}"

    def describe(self) -> list[str]:
        """Lines for a banner: orgs, API keys and devices, tokens masked."""
        lines = [f"orgs: {', '.join(sorted(self.orgs)) or '(none)'}"]
        lines += [f"api key {key}  token {mask(tok)}" for key, tok in sorted(self.api_keys.items())]
        lines += [
            f"{'gateway' if cid[0] == 'g' else 'device'} {cid}  token {mask(tok)}"
            for cid, tok in sorted(self.device_tokens.items())
        ]
        if self.accept_any_key:
            lines.append("any API key of any org is accepted with any token (--accept-any-key)")
        if self.quickstart:
            lines.append("quickstart: org 'quickstart' needs no credentials (--quickstart)")
        return lines


def _same(password: bytes, expected: bytes | None) -> bool:
    # compare_digest's time depends on the lengths only; the dummy keeps "no such key"
    # from answering faster than "wrong token".
    return hmac.compare_digest(password, _DUMMY if expected is None else expected) and (
        expected is not None
    )


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def mask(token: bytes | str) -> str:
    """A token for display: its first two characters for recognition, then stars."""
    text = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
    return text[:2] + "*" * 6 if len(text) >= 8 else "*" * 8


# --- building the table -------------------------------------------------------------------


def load_credentials(
    *,
    api_keys: Sequence[str] = (),
    keys_file: str | os.PathLike[str] | None = None,
    accept_any_key: bool = False,
    quickstart: bool = False,
) -> Credentials:
    """The table from ``--api-key`` values and a ``--keys`` file; ConfigError lists all problems."""
    problems: list[str] = []
    keys: dict[str, str] = {}
    devices: dict[str, str] = {}
    for value in api_keys:
        parsed = _parse_api_key_flag(value, problems)
        if parsed is not None:
            _merge(keys, *parsed, f"--api-key {parsed[0]}", problems)
    if keys_file is not None:
        file_keys, file_devices = _read_keys_file(Path(keys_file), problems)
        for key, token in file_keys.items():
            _merge(keys, key, token, f"--keys {keys_file}: api_keys[{key!r}]", problems)
        devices.update(file_devices)
    if problems:
        raise ConfigError(problems)
    return Credentials(
        api_keys={k: v.encode() for k, v in keys.items()},
        device_tokens={k: v.encode() for k, v in devices.items()},
        accept_any_key=accept_any_key,
        quickstart=quickstart,
    )


def _parse_api_key_flag(value: str, problems: list[str]) -> tuple[str, str] | None:
    key, sep, token = value.partition(":")
    where = f"--api-key {_short(key)!r}"
    if not sep:
        # No ':' means no token, so echoing the value shows no secret.
        problems.append(f"{where}: expected KEY:TOKEN, with KEY {API_KEY_RULE}")
        return None
    return _checked_key(key, token, where, problems)


def _checked_key(
    key: str, token: object, where: str, problems: list[str]
) -> tuple[str, str] | None:
    before = len(problems)
    try:
        org_from_api_key(key)
    except IdentityError as exc:
        problems.append(f"{where}: {exc}")
    _check_token(token, where, problems)
    return (key, str(token)) if len(problems) == before else None


def _check_token(token: object, where: str, problems: list[str]) -> None:
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        problems.append(f"{where}: the token must be {TOKEN_RULE}")


def _merge(table: dict[str, str], key: str, token: str, where: str, problems: list[str]) -> None:
    if table.get(key, token) != token:
        problems.append(f"{where}: API key {key!r} is given twice with different tokens")
    table[key] = token


def _read_keys_file(path: Path, problems: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The ``api_keys`` and ``device_tokens`` of a keys file, each entry checked."""
    where = f"--keys {path}"
    document = _load_json(path, where, problems)
    if document is None:
        return {}, {}
    if not isinstance(document, dict):
        problems.append(f"{where}: expected a JSON object with {_members()}")
        return {}, {}
    problems.extend(
        f"{where}: unknown member {name!r}; accepted are {_members()}"
        for name in document
        if name not in KEYS_FILE_MEMBERS
    )
    keys = _entries(document.get("api_keys", {}), f"{where}: api_keys", problems)
    devices = _entries(document.get("device_tokens", {}), f"{where}: device_tokens", problems)
    good_keys = {}
    for key, token in keys.items():
        checked = _checked_key(key, token, f"{where}: api_keys[{_short(key)!r}]", problems)
        if checked is not None:
            good_keys[key] = checked[1]
    return good_keys, _checked_devices(devices, f"{where}: device_tokens", problems)


def _checked_devices(
    entries: Mapping[str, object], where: str, problems: list[str]
) -> dict[str, str]:
    good: dict[str, str] = {}
    for client_id, token in entries.items():
        here = f"{where}[{_short(client_id)!r}]"
        try:
            parsed = parse_client_id(client_id)
        except IdentityError as exc:
            problems.append(f"{here}: {exc}")
            continue
        if parsed.cls not in (ClientClass.DEVICE, ClientClass.GATEWAY):
            problems.append(
                f"{here}: expected a device or gateway client ID (d:{{org}}:{{type}}:{{id}} or "
                "g:{org}:{type}:{id}); applications go in api_keys"
            )
            continue
        before = len(problems)
        _check_token(token, here, problems)
        if len(problems) == before:
            good[client_id] = str(token)
    return good


def _load_json(path: Path, where: str, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{where}: cannot read the file: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{where}: not UTF-8 text")
        return None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        problems.append(f"{where}: {exc}")
    except json.JSONDecodeError as exc:
        # The message says where; the line itself could hold a token, so it is not quoted.
        problems.append(
            f"{where}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
    return None


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal names silently; for credentials that hides a mistake.
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _Duplicate(f"{_short(name)!r} appears twice in one object")
        result[name] = value
    return result


def _entries(value: object, where: str, problems: list[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a JSON object mapping names to token strings")
        return {}
    return value


def _members() -> str:
    return " and ".join(repr(name) for name in KEYS_FILE_MEMBERS)
