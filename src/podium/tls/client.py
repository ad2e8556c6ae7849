"""Where the CLI (and any program using podium.api.Client) finds its address and credentials.

    1. --addr / PODIUM_ADDR, and --ca-cert/--client-cert/--client-key or
       PODIUM_CACERT / PODIUM_CLIENT_CERT / PODIUM_CLIENT_KEY
    2. the CLI config file: $PODIUM_CONFIG, else ./.podium/dev/cli.json (what `podium dev`
       writes), ./.podium/server/cli.json (`podium server`), ~/.config/podium/cli.json:
       {"addr": "https://...", "ca_cert": PATH, "client_cert": PATH, "client_key": PATH,
        "token": ACL-SECRET (optional; PODIUM_TOKEN wins)}

Variables win over the file, field by field; relative paths in the file are relative to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from podium.errors import Problem, ValidationError
from podium.tls.files import Credentials

CONFIG_NAME = "cli.json"


@dataclass(frozen=True)
class CliConfig:
    addr: str = ""
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    source: str = ""  # the file it came from, for error messages
    token: str = ""  # an ACL token's secret: sent as X-Podium-Token

    def credentials(self) -> Credentials | None:
        if not self.ca_cert:
            return None
        return Credentials(self.ca_cert, self.client_cert, self.client_key)


def config_paths() -> list[str]:
    explicit = os.environ.get("PODIUM_CONFIG")
    if explicit:
        return [explicit]
    return [
        os.path.join(".podium", "dev", CONFIG_NAME),
        os.path.join(".podium", "server", CONFIG_NAME),
        os.path.join(os.path.expanduser("~"), ".config", "podium", CONFIG_NAME),
    ]


def read_config(path: str) -> CliConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ValidationError([Problem(path, f"cannot read the CLI config: {e}")]) from None
    if not isinstance(raw, dict):
        raise ValidationError([Problem(path, "expected a JSON object")])
    base = os.path.dirname(os.path.abspath(path))

    def field(name: str) -> str:
        v = raw.get(name, "")
        if not isinstance(v, str):
            raise ValidationError([Problem(f"{path}: {name}", "expected a string")])
        return os.path.join(base, v) if v and name != "addr" and not os.path.isabs(v) else v

    token = raw.get("token", "")
    if not isinstance(token, str):
        raise ValidationError([Problem(f"{path}: token", "expected a string")])
    return CliConfig(
        field("addr"), field("ca_cert"), field("client_cert"), field("client_key"), path, token
    )


def write_config(path: str, cfg: CliConfig) -> None:
    """The CLI config; 0600 when it holds a token's secret."""
    from podium.tls.files import write_private, write_public

    text = (
        json.dumps(
            {
                "addr": cfg.addr,
                "ca_cert": cfg.ca_cert,
                "client_cert": cfg.client_cert,
                "client_key": cfg.client_key,
                **({"token": cfg.token} if cfg.token else {}),
            },
            indent=2,
        )
        + "\n"
    )
    (write_private if cfg.token else write_public)(path, text)


def discover() -> CliConfig:
    """The config in force: the variables over the first config file found."""
    found = CliConfig()
    if os.environ.get("PODIUM_CONFIG") or not os.environ.get("PODIUM_CACERT"):
        for path in config_paths():
            if os.path.exists(path):
                found = read_config(path)
                break
    env = os.environ.get
    return CliConfig(
        env("PODIUM_ADDR") or found.addr,
        env("PODIUM_CACERT") or found.ca_cert,
        env("PODIUM_CLIENT_CERT") or found.client_cert,
        env("PODIUM_CLIENT_KEY") or found.client_key,
        found.source,
        env("PODIUM_TOKEN") or found.token,
    )


def env_file_text(cfg: CliConfig) -> str:
    """`. <data-dir>/env`: curl, scripts and the CLI use the same credentials."""
    if not cfg.ca_cert:  # --insecure
        return (
            f"export PODIUM_ADDR={cfg.addr}\n"
            "unset PODIUM_CACERT PODIUM_CLIENT_CERT PODIUM_CLIENT_KEY\n"
        )
    return (
        f"export PODIUM_ADDR={cfg.addr}\n"
        f"export PODIUM_CACERT={cfg.ca_cert}\n"
        f"export PODIUM_CLIENT_CERT={cfg.client_cert}\n"
        f"export PODIUM_CLIENT_KEY={cfg.client_key}\n"
    )
