"""Where each kind lives in the store. The only module that spells key paths."""

from __future__ import annotations

JOBS = "/jobs/"
JOB_VERSIONS = "/jobversions/"
ALLOCS = "/allocs/"
NODES = "/nodes/"
EVENTS = "/events/"
DEPLOYMENTS = "/deployments/"
META = "/meta/"
# Several servers: who leads (a key on the leader's lease), who is up, shared heartbeats,
# and remembered results of retried writes.
LEADER = "/leader"
MEMBERS = "/members/"
HEARTBEATS = "/heartbeats/"
IDEMPOTENCY = "/idempotency/"
PLACEMENT_FAILURES = "/placementfailures/"  # the leader's, for the other servers
PERIODIC = "/periodic/"  # per cron job: the scheduled time it last launched (or skipped)
SCALING = "/scaling/"  # per autoscaled job: last changes, decisions, wake, demand history
# Configs and secrets: the newest version of each (the head) and every version kept. A path
# may hold '/', never '@', so "PATH@" lists exactly one object's versions.
CONFIGS = "/configs/"
CONFIG_VERSIONS = "/configversions/"
SECRETS = "/secrets/"
SECRET_VERSIONS = "/secretversions/"
# The keyring: its keys (each sealed under the servers' root key), which one is active,
# and a full re-encryption under way.
KEYRING_KEYS = "/keyring/keys/"
KEYRING_ACTIVE = "/keyring/active"
KEYRING_ROTATION = "/keyring/rotation"


def job(namespace: str, name: str) -> str:
    return f"{JOBS}{namespace}/{name}"


def _flat(name: str) -> str:
    # A child job's name has a '/' (web/periodic-1700000000): as ':' (never in a name) in
    # keys listed by prefix, so the parent's prefix does not take in its children's.
    return name.replace("/", ":")


def job_version(namespace: str, name: str, version: int) -> str:
    return f"{JOB_VERSIONS}{namespace}/{_flat(name)}/{version:010d}"


def job_versions(namespace: str, name: str) -> str:
    return f"{JOB_VERSIONS}{namespace}/{_flat(name)}/"


def periodic(namespace: str, name: str) -> str:
    return f"{PERIODIC}{namespace}/{name}"


def scaling(namespace: str, name: str) -> str:
    return f"{SCALING}{namespace}/{name}"


def deployment(namespace: str, job: str, version: int) -> str:
    return f"{DEPLOYMENTS}{namespace}/{job}/{version:010d}"


def alloc(alloc_id: str) -> str:
    return f"{ALLOCS}{alloc_id}"


def node(node_id: str) -> str:
    return f"{NODES}{node_id}"


def event(seq: int) -> str:
    return f"{EVENTS}{seq:020d}"


def member(server_id: str) -> str:
    return f"{MEMBERS}{server_id}"


def heartbeat(node_id: str) -> str:
    return f"{HEARTBEATS}{node_id}"


def idempotency(key: str) -> str:
    return f"{IDEMPOTENCY}{key}"


def placement_failures(job_key: str) -> str:
    return f"{PLACEMENT_FAILURES}{job_key}"


def data_heads(kind: str) -> str:
    """The prefix of every head of a kind ("config" or "secret")."""
    return CONFIGS if kind == "config" else SECRETS


def data_head(kind: str, namespace: str, path: str) -> str:
    return f"{data_heads(kind)}{namespace}/{path}"


def data_version(kind: str, namespace: str, path: str, version: int) -> str:
    return f"{data_versions(kind, namespace, path)}{version:010d}"


def data_versions(kind: str, namespace: str, path: str) -> str:
    """The prefix of one object's versions."""
    prefix = CONFIG_VERSIONS if kind == "config" else SECRET_VERSIONS
    return f"{prefix}{namespace}/{path}@"


def keyring_key(key_id: str) -> str:
    return f"{KEYRING_KEYS}{key_id}"


# The cluster's trust (podium/tls/authority.py): never part of a snapshot.
TLS = "/tls/"
TLS_CA = "/tls/ca"  # roots, the issuing CA (its key sealed), epoch, rotation
TLS_TOKENS = "/tls/tokens/"  # join tokens by the hash of their secret
TLS_NODES = "/tls/nodes/"  # per node: which CA epoch issued its certificate, until when
TLS_REVOKED = "/tls/revoked/"  # node ids whose certificates no longer count (node purge)
NODE_SECRETS = "/tls/secrets/"  # --insecure: the hash of each node's secret
UI_LOGINS = "/tls/ui/logins/"  # web UI login links (one use), by the hash of their token
UI_SESSIONS = "/tls/ui/sessions/"  # web UI browser sessions, by the hash of their cookie


def tls_token(digest: str) -> str:
    return f"{TLS_TOKENS}{digest}"


def tls_node(node_id: str) -> str:
    return f"{TLS_NODES}{node_id}"


def tls_revoked(node_id: str) -> str:
    return f"{TLS_REVOKED}{node_id}"


def node_secret(node_id: str) -> str:
    return f"{NODE_SECRETS}{node_id}"


def ui_login(digest: str) -> str:
    return f"{UI_LOGINS}{digest}"


def ui_session(digest: str) -> str:
    return f"{UI_SESSIONS}{digest}"


# Multi-tenancy and access control (server/acl.py, server/namespaces.py).
NAMESPACES = "/namespaces/"
ACL = "/acl/"
ACL_BOOTSTRAP = "/acl/bootstrap"  # created once, by `podium acl bootstrap`
ACL_POLICIES = "/acl/policies/"
ACL_TOKENS = "/acl/tokens/"  # by accessor
ACL_SECRETS = "/acl/secrets/"  # sha256(secret) -> accessor


def namespace(name: str) -> str:
    return f"{NAMESPACES}{name}"


def acl_policy(name: str) -> str:
    return f"{ACL_POLICIES}{name}"


def acl_token(accessor: str) -> str:
    return f"{ACL_TOKENS}{accessor}"


def acl_secret(digest: str) -> str:
    return f"{ACL_SECRETS}{digest}"
