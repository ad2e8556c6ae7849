"""server -> etcd over TLS with a client certificate and etcd user/password auth.

etcd runs with --client-cert-auth and auth enabled (a root user); podium's server is
given --etcd-cacert/--etcd-cert/--etcd-key and --etcd-user with PODIUM_ETCD_PASSWORD.
Without them, or with a wrong password, it does not get in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from aetcd import rpc

from integration.cluster import PODIUM, ROOT, free_port, wait_until
from podium.tls import pki
from support.etcd import start_etcd_cluster

pytestmark = pytest.mark.integration


def _pki(d: Path) -> tuple[Path, Path, Path, Path, Path]:
    ca, key = pki.create_ca()
    out = []
    for name, role in (("etcd", "server"), ("client", "operator")):
        k = pki.make_key()
        cert = pki.issue(ca, key, k.public_key(), role=role, name=name, hosts=["127.0.0.1"])
        (d / f"{name}.pem").write_text(pki.cert_pem(cert))
        (d / f"{name}-key.pem").write_text(pki.key_pem(k))
        out += [d / f"{name}.pem", d / f"{name}-key.pem"]
    (d / "ca.pem").write_text(pki.cert_pem(ca))
    return d / "ca.pem", out[0], out[1], out[2], out[3]


async def _enable_auth(endpoint: str, creds: grpc.ChannelCredentials, password: str) -> None:
    async with grpc.aio.secure_channel(endpoint, creds) as ch:
        auth = rpc.AuthStub(ch)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=password))
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc.AuthEnableRequest())


def _server(
    tmp: Path, url: str, port: int, extra: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*PODIUM, "server", "--addr", f"127.0.0.1:{port}", "--store", url, "--data-dir", str(tmp),
         "--dns-addr", "off", *extra],
        cwd=ROOT, env={**os.environ, **env}, stdout=(tmp.parent / f"{tmp.name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_server_reaches_etcd_over_tls_with_user_auth(tmp_path: Path) -> None:
    ca, etcd_cert, etcd_key, client_cert, client_key = _pki(tmp_path)
    etcd = start_etcd_cluster(tmp_path, 1, tls=(ca, etcd_cert, etcd_key))
    try:
        creds = grpc.ssl_channel_credentials(
            ca.read_bytes(), client_key.read_bytes(), client_cert.read_bytes()
        )
        asyncio.run(_enable_auth(etcd.endpoints[0], creds, "s3cret-pw"))
        url = etcd.url("/tls-test")
        flags = ["--etcd-cacert", str(ca), "--etcd-cert", str(client_cert), "--etcd-key", str(client_key),
                 "--etcd-user", "root"]  # fmt: skip
        # Without TLS flags: no connection to a TLS-only etcd; with a wrong password: refused.
        for name, extra, env in (
            ("plain", [], {}),
            ("wrong", flags, {"PODIUM_ETCD_PASSWORD": "guess"}),
        ):
            port = free_port()
            proc = _server(tmp_path / name, url, port, extra, env)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(10)
            log = (tmp_path / f"{name}.log").read_text()
            assert proc.returncode != 0, (name, log[-2000:])
            if name == "wrong":
                assert "authenticate as 'root'" in log, log[-2000:]
        port = free_port()
        ok = _server(tmp_path / "ok", url, port, flags, {"PODIUM_ETCD_PASSWORD": "s3cret-pw"})
        try:
            tls_dir = tmp_path / "ok" / "tls"
            import ssl

            def answers() -> bool:
                ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
                ctx.load_cert_chain(str(tls_dir / "cli.pem"), str(tls_dir / "cli-key.pem"))
                r = httpx.get(f"https://127.0.0.1:{port}/v1/status", verify=ctx, timeout=3)
                return r.status_code == 200 and r.json()["leader"]

            wait_until(answers, timeout=40, what="the server on TLS etcd to lead")
            assert "s3cret-pw" not in (tmp_path / "ok.log").read_text()
        finally:
            ok.terminate()
            ok.wait(10)
    finally:
        etcd.stop()
