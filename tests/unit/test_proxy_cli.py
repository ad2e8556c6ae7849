"""`python -m podium.proxy`'s options: --via goes with the TLS files and name it needs."""

from __future__ import annotations

import pytest

from podium.proxy.__main__ import endpoints, parse_args

BASE = ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:8080", "--backend", "127.0.0.1:8081=3"]


def test_plain_backends_are_reached_straight() -> None:
    eps = endpoints(parse_args(BASE))
    assert [(e.host, e.port, e.weight, e.via, e.ssl) for e in eps] == [
        ("127.0.0.1", 8080, 1, None, None),
        ("127.0.0.1", 8081, 3, None, None),
    ]


def test_via_without_its_tls_files_names_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args([*BASE, "--via", "127.0.0.1:9000", "--tls-ca", "ca.pem"])
    assert exc.value.code == 2
    assert "--via needs --tls-cert, --tls-key, --tls-name" in capsys.readouterr().err


def test_tls_files_without_via_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--tls-name", "b.node.podium"])
    assert "go with --via" in capsys.readouterr().err
