"""Which BMC measures this node's power, and with which credentials: `--node-power SPEC`.

SPEC is a URL or the path of a small TOML file:

- `ipmi://HOST[:PORT]`: IPMI over LAN (RMCP+, port 623), DCMI "Get Power Reading";
- `redfish://HOST[:PORT]`: Redfish over HTTPS; `redfish+http://HOST[:PORT]` over plain HTTP (a
  lab BMC behind a management network, or a test service);
- a file: `url = "..."` and optionally `credentials` (a file, below), `chassis` (a Redfish
  chassis id), `verify_tls` (true), `ca_file`, `poll_s` (at least 1) and `timeout_s`.

`WATTBENCH_NODE_POWER` holds the SPEC where the flag is not given (a job script sets it once).

Credentials never travel on a command line, in a log line or in a result file (where `ps`, shell
history or a shared results folder would show them). They come from `WATTBENCH_BMC_USERNAME` and
`WATTBENCH_BMC_PASSWORD`, or from a TOML file with `username` and `password` that only its owner
can read (mode 600 or 400): named by the config's `credentials` key or `WATTBENCH_BMC_CREDENTIALS`.
A URL with a user or password in it is refused. `Credentials` never shows its password in a repr.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SPEC_ENV = "WATTBENCH_NODE_POWER"
USERNAME_ENV, PASSWORD_ENV, CREDENTIALS_ENV = "WATTBENCH_BMC_USERNAME", "WATTBENCH_BMC_PASSWORD", "WATTBENCH_BMC_CREDENTIALS"
SCHEMES = {"ipmi": ("ipmi", 623), "redfish": ("redfish", 443), "redfish+http": ("redfish", 80)}
MIN_POLL_S = 1.0  # a BMC averages over seconds; reading it faster only loads it
DEFAULT_TIMEOUT_S = 5.0
CONFIG_KEYS = ("url", "credentials", "chassis", "verify_tls", "ca_file", "poll_s", "timeout_s")
VALID = "ipmi://HOST[:PORT], redfish://HOST[:PORT], redfish+http://HOST[:PORT] or a TOML file with url = ..."


class NodeConfigError(ValueError):
    """The node-power configuration is wrong; the message says what and what is valid."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    origin: str = "environment"  # where they came from, safe to show: "environment" or the file's path


@dataclass(frozen=True)
class NodeTarget:
    """A BMC to read: protocol ("ipmi" or "redfish"), host, port, and how to talk to it. `url`
    is what a result file may show (no credentials are ever part of it)."""

    protocol: str
    host: str
    port: int
    url: str
    credentials: Credentials
    tls: bool = True
    verify_tls: bool = True
    ca_file: str | None = None
    chassis: str | None = None
    poll_s: float = MIN_POLL_S
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def base_url(self) -> str:
        """The Redfish service's base URL (https unless the spec said redfish+http)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def parse_spec(spec: str, env: Mapping[str, str] | None = None) -> NodeTarget:
    """The target a `--node-power` SPEC names (a URL or a TOML file), credentials included.
    NodeConfigError naming what is wrong."""
    env = os.environ if env is None else env
    if "://" in spec:
        return _target(spec, {}, env)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise NodeConfigError(f"--node-power {spec!r}: neither a URL nor a file; valid: {VALID}")
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NodeConfigError(f"--node-power {path}: cannot read it as TOML ({exc})") from None
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise NodeConfigError(f"--node-power {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(CONFIG_KEYS)}")
    url = config.get("url")
    if not isinstance(url, str):
        raise NodeConfigError(f"--node-power {path}: 'url' is missing or not a string; valid: {VALID}")
    return _target(url, config, env, path.parent)


def _target(url: str, config: Mapping[str, object], env: Mapping[str, str], base: Path | None = None) -> NodeTarget:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise NodeConfigError(f"--node-power: unknown scheme {parts.scheme!r}; valid: {VALID}")
    if parts.username or parts.password:
        raise NodeConfigError(
            f"--node-power: the URL holds credentials; set {USERNAME_ENV} and {PASSWORD_ENV}, or name a file "
            f"only you can read (mode 600) in {CREDENTIALS_ENV} or the config's 'credentials'"
        )
    if not parts.hostname or parts.path not in ("", "/"):
        raise NodeConfigError(f"--node-power {url!r}: expected a host and nothing after it; valid: {VALID}")
    protocol, default_port = SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise NodeConfigError(f"--node-power {url!r}: the port is not a number from 1 to 65535") from None
    poll_s = _number(config, "poll_s", MIN_POLL_S)
    if poll_s < MIN_POLL_S:
        raise NodeConfigError(f"--node-power: poll_s {poll_s} is under {MIN_POLL_S} s; a BMC averages over seconds")
    timeout_s = _number(config, "timeout_s", DEFAULT_TIMEOUT_S)
    if timeout_s <= 0:
        raise NodeConfigError(f"--node-power: timeout_s must be > 0 seconds, got {timeout_s}")
    credentials_file = config.get("credentials")
    if credentials_file is not None and not isinstance(credentials_file, str):
        raise NodeConfigError("--node-power: 'credentials' must be the path of a file")
    ca_file = config.get("ca_file")
    return NodeTarget(
        protocol=protocol,
        host=parts.hostname,
        port=port,
        url=f"{parts.scheme}://{parts.netloc}",
        credentials=credentials(env, credentials_file, base),
        tls=parts.scheme == "redfish",
        verify_tls=bool(config.get("verify_tls", True)),
        ca_file=str(ca_file) if ca_file is not None else None,
        chassis=str(config["chassis"]) if config.get("chassis") is not None else None,
        poll_s=poll_s,
        timeout_s=timeout_s,
    )


def _number(config: Mapping[str, object], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NodeConfigError(f"--node-power: {key} must be a number of seconds, got {value!r}")
    return float(value)


def credentials(env: Mapping[str, str], file: str | None = None, base: Path | None = None) -> Credentials:
    """The BMC user and password: from `file` (or the file `WATTBENCH_BMC_CREDENTIALS` names),
    else from the environment. NodeConfigError when neither has them, or when the file can be
    read by anyone but its owner."""
    file = file or env.get(CREDENTIALS_ENV)
    if file:
        path = Path(file).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return _from_file(path)
    username, password = env.get(USERNAME_ENV), env.get(PASSWORD_ENV)
    if not username or password is None:
        raise NodeConfigError(
            f"--node-power: no BMC credentials; set {USERNAME_ENV} and {PASSWORD_ENV}, or name a file only you "
            f"can read (mode 600, with username = ... and password = ...) in {CREDENTIALS_ENV}"
        )
    return Credentials(username, password)


def _from_file(path: Path) -> Credentials:
    try:
        info = path.stat()
    except OSError as exc:
        raise NodeConfigError(f"--node-power: cannot read the credentials file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise NodeConfigError(
            f"--node-power: the credentials file {path} can be read by others (mode {stat.S_IMODE(info.st_mode):o}, "
            f"owner uid {info.st_uid}); make it yours alone: chmod 600 {path}"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # the decoder's message can quote the line it failed on, which may hold the password
        raise NodeConfigError(f"--node-power: the credentials file {path} is not valid TOML ({type(exc).__name__})") from None
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise NodeConfigError(f'--node-power: the credentials file {path} needs username = "..." and password = "..."')
    return Credentials(username, password, origin=str(path))
