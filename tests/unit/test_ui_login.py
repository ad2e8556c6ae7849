"""Web UI login: a link works once and only in time, a session ends when it expires or
logs out, and the store holds hashes, never the token or the cookie."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.errors import Forbidden
from podium.runtime.clock import FakeClock
from podium.server import ui_login
from podium.server.ui_login import LOGIN_TTL, SESSION_TTL, UiSessions
from podium.store import keys
from podium.store.memory import MemoryStore
from podium.tls.identity import Identity

ADMIN = Identity("management", "admin")


def test_a_link_logs_in_once_and_the_session_is_an_operator_not_management() -> None:
    async def go() -> None:
        store, clock = MemoryStore(), FakeClock()
        ui = UiSessions(store, clock)
        token = await ui.new_login(ADMIN)
        secret, record = await ui.open(token)
        assert ui_login.identity(record) == Identity("operator", "ui:admin", browser=True)
        assert await ui.lookup(secret) == record
        with pytest.raises(Forbidden, match="used already"):
            await ui.open(token)
        stored = b"".join(kv.key.encode() + kv.value for kv in (await store.list(keys.TLS))[0])
        assert token.encode() not in stored and secret.encode() not in stored

    asyncio.run(go())


def test_a_link_expires_and_so_does_a_session() -> None:
    async def go() -> None:
        store, clock = MemoryStore(), FakeClock()
        ui = UiSessions(store, clock)
        late = await ui.new_login(ADMIN)
        clock.advance(LOGIN_TTL + 1)
        with pytest.raises(Forbidden, match="expired"):
            await ui.open(late)
        secret, _ = await ui.open(await ui.new_login(ADMIN))
        clock.advance(SESSION_TTL + 1)
        assert await ui.lookup(secret) is None
        assert await ui.lookup("not-a-session") is None

    asyncio.run(go())


def test_logging_out_ends_the_session_and_old_records_are_swept() -> None:
    async def go() -> None:
        store, clock = MemoryStore(), FakeClock()
        ui = UiSessions(store, clock)
        secret, _ = await ui.open(await ui.new_login(ADMIN))
        await ui.close(secret)
        assert await ui.lookup(secret) is None
        other = UiSessions(store, clock)  # another server: the store decides, not a cache
        kept, _ = await ui.open(await ui.new_login(ADMIN))
        assert await other.lookup(kept) is not None
        await ui.new_login(ADMIN)  # unused: it expires
        clock.advance(SESSION_TTL + 1)
        await ui.new_login(ADMIN)  # sweeps what expired
        logins, _ = await store.list(keys.UI_LOGINS)
        sessions, _ = await store.list(keys.UI_SESSIONS)
        assert len(logins) == 1 and sessions == []

    asyncio.run(go())


def test_a_lookup_racing_a_log_out_does_not_bring_the_session_back() -> None:
    """A page's request that was reading its session while the page logged out (the
    browser's event stream, say) must not put the session back in the server's cache:
    the old cookie is refused at once, not 10 seconds later."""

    class SlowGets(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.hold: asyncio.Event | None = None
            self.reading = asyncio.Event()

        async def get(self, key: str) -> Any:
            kv = await super().get(key)
            if self.hold is not None and key.startswith(keys.UI_SESSIONS):
                self.reading.set()
                await self.hold.wait()
            return kv

    async def go() -> None:
        store, clock = SlowGets(), FakeClock()
        ui = UiSessions(store, clock)
        secret, _ = await ui.open(await ui.new_login(ADMIN))
        store.hold = asyncio.Event()
        racing = asyncio.ensure_future(ui.lookup(secret))  # read before the log out
        await store.reading.wait()
        await ui.close(secret)
        store.hold.set()
        await racing
        store.hold = None
        assert await ui.lookup(secret) is None

    asyncio.run(go())
