"""Joining a cluster with a token: fetch its CA, pin it to the token, ask for a certificate.

    GET  /v1/tls/ca    (unverified: anyone could answer) -> its digest must be the token's
    POST /v1/tls/join  {token, csr, node_id} over TLS verified against that CA, the server
                       checked by name (server.podium) -> {cert, ca, name, [kek]}

The private key never leaves the joiner; the token is good once.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import httpx

from podium.errors import Forbidden, Problem, ValidationError
from podium.tls import pki
from podium.tls.authority import parse_token
from podium.tls.context import client_context


def https(url: str) -> str:
    return "https://" + url.removeprefix("http://").removeprefix("https://").rstrip("/")


async def join(
    server: str,
    token: str,
    key: pki.PrivateKey,
    *,
    role: str,
    proposed_id: str = "",
    hosts: list[str] | None = None,
) -> dict[str, Any]:
    got, digest, _ = parse_token(token)
    if got != role:
        raise ValidationError([Problem("--join-token", f"a {got} token cannot join a {role}")])
    base = https(server)
    async with httpx.AsyncClient(verify=False, timeout=10) as c:  # pinned below
        r = await c.get(f"{base}/v1/tls/ca")
        r.raise_for_status()
        bundle = r.text
    roots = pki.load_certs(bundle)
    if not roots or pki.digest(roots[0]) != digest:
        raise Forbidden(f"the server at {base} does not hold the CA the join token names")
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(bundle)
    try:
        ctx = client_context(None, ca=f.name)
    finally:
        os.unlink(f.name)
    async with httpx.AsyncClient(verify=ctx, timeout=10) as c:
        r = await c.post(
            f"{base}/v1/tls/join",
            json={
                "token": token,
                "csr": pki.csr_pem(pki.make_csr(key)),
                "node_id": proposed_id,
                "hosts": hosts or [],
            },
            extensions={"sni_hostname": pki.SERVER_NAME},
        )
    if r.status_code != 200:
        try:
            why = r.json().get("error", r.text)
        except ValueError:
            why = r.text
        raise Forbidden(f"join refused by {base}: {why}")
    data: dict[str, Any] = r.json()
    return data
