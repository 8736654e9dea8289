"""FleetStore against a real etcd: keys, compare-and-swap, leases, watches, and etcd frozen, killed, restarted."""

from __future__ import annotations

import time
from typing import Callable, Iterator, List

import etcd3gw
import pytest
import requests

from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.errors import ExitCode, FleetError
from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.fleet.store import Event, FleetStore, Held, HistoryCompacted, LeaseLost, Watch

TIMEOUT = 0.5


@pytest.fixture
def store(shared_etcd: PrivateEtcd, request: pytest.FixtureRequest) -> Iterator[FleetStore]:
    fleet = FleetStore([shared_etcd.client_url], request.node.name, timeout=TIMEOUT)
    yield fleet
    fleet.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def collect(watch: Watch, count: int, timeout: float = 5.0, *, reconnecting: bool = False) -> List[Event]:
    """Up to ``count`` events; with ``reconnecting``, FleetError (the stream still down) is waited out."""
    events: List[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        try:
            events += watch.poll(0.2)
        except FleetError:
            if not reconnecting:
                raise
            time.sleep(0.1)
    return events


def fails_within(call: Callable[[], object], limit: float) -> FleetError:
    began = time.monotonic()
    with pytest.raises(FleetError) as caught:
        call()
    assert time.monotonic() - began < limit
    return caught.value


def test_put_get_delete_under_the_fleet_prefix(store: FleetStore, shared_etcd: PrivateEtcd) -> None:
    assert store.get("plan") is None
    revision = store.put("plan", '{"step": 1}')
    entry = store.get("plan")
    assert entry is not None
    assert (entry.key, entry.value, entry.mod_revision, entry.version) == ("plan", b'{"step": 1}', revision, 1)
    store.put("hosts/b", b"2")
    store.put("hosts/a", b"1")
    listing = store.get_prefix("hosts/")
    assert [(e.key, e.value) for e in listing.entries] == [("hosts/a", b"1"), ("hosts/b", b"2")]
    assert listing.revision == store.revision() >= revision + 2
    raw = etcd3gw.client(host="127.0.0.1", port=shared_etcd.client_port, timeout=5)
    assert raw.get("/nginx-canary/test_put_get_delete_under_the_fleet_prefix/plan") == [b'{"step": 1}']
    assert store.delete("plan") is True
    assert store.delete("plan") is False
    assert store.get("plan") is None


def test_fleets_do_not_see_each_other(shared_etcd: PrivateEtcd, store: FleetStore) -> None:
    other = FleetStore([shared_etcd.client_url], "other-fleet", timeout=TIMEOUT)
    store.put("members/lb-1", "x")
    assert other.get("members/lb-1") is None
    assert other.get_prefix("").entries == []


def test_create_if_absent_and_update_if_revision(store: FleetStore) -> None:
    assert store.create("coordinator", "lb-1") is True
    assert store.create("coordinator", "lb-2") is False
    entry = store.get("coordinator")
    assert entry is not None and entry.value == b"lb-1"
    assert store.swap("coordinator", "lb-3", entry.mod_revision) is True
    assert store.swap("coordinator", "lb-4", entry.mod_revision) is False  # stale revision
    assert store.get("coordinator").value == b"lb-3"  # type: ignore[union-attr]
    assert store.swap("absent", "v", 0) is True


def test_a_swap_fenced_by_a_held_key_fails_once_the_lease_is_gone(store: FleetStore) -> None:
    lease = store.grant(10)
    assert store.create("coordinator", "lb-1", lease=lease)
    assert store.get("coordinator").lease == lease.id  # type: ignore[union-attr]
    assert store.swap("plan", "step 1", 0, held=[Held("coordinator", lease)]) is True
    plan = store.get("plan")
    store.revoke(lease)
    store.revoke(lease)  # already gone: fine
    assert store.get("coordinator") is None
    assert store.swap("plan", "step 2", plan.mod_revision, held=[Held("coordinator", lease)]) is False  # type: ignore[union-attr]
    assert store.get("plan").value == b"step 1"  # type: ignore[union-attr]


def test_leases_expire_unless_refreshed(store: FleetStore) -> None:
    kept, dropped = store.grant(2), store.grant(2)
    store.put("members/kept", "1", lease=kept)
    store.put("members/dropped", "1", lease=dropped)
    began = time.monotonic()
    while store.get("members/dropped") is not None:
        assert time.monotonic() - began < 5.0, "an unrefreshed 2 s lease outlived 5 s"
        assert store.refresh(kept) >= 1
        time.sleep(0.3)
    assert time.monotonic() - began > 1.0
    for _ in range(5):  # well past the dropped lease's end
        assert store.refresh(kept) >= 1
        time.sleep(0.3)
    assert store.get("members/kept") is not None
    with pytest.raises(LeaseLost):
        store.refresh(dropped)


def test_watch_replays_from_a_revision_then_follows(store: FleetStore) -> None:
    first = store.put("plan", "1")
    store.put("plan", "2")
    store.put("elsewhere", "not watched")
    store.put("plan/extra", "3")
    store.delete("plan/extra")
    watch = store.watch("plan", first + 1, idle=1.0)
    try:
        events = collect(watch, 3)
        assert [(e.kind, e.key, e.value) for e in events] == [
            ("put", "plan", b"2"), ("put", "plan/extra", b"3"), ("delete", "plan/extra", b"")]
        later = store.put("plan", "4")
        assert [(e.key, e.value, e.mod_revision) for e in collect(watch, 1)] == [("plan", b"4", later)]
        time.sleep(1.5)  # the idle stream reconnects from the next revision: nothing replayed twice
        assert watch.poll() == []
    finally:
        watch.close()


def test_watch_from_a_compacted_revision_says_so(store: FleetStore, shared_etcd: PrivateEtcd) -> None:
    old = store.put("plan", "1")
    now = store.put("plan", "2")
    requests.post(f"{shared_etcd.client_url}/v3/kv/compaction", json={"revision": now}, timeout=5).raise_for_status()
    watch = store.watch("plan", old)
    try:
        wait_for(lambda: watch.error is not None)
        with pytest.raises(HistoryCompacted) as caught:
            watch.poll()
        assert caught.value.compact_revision == now
    finally:
        watch.close()


def test_a_frozen_etcd_fails_every_call_within_its_timeout_then_recovers(etcd: PrivateEtcd) -> None:
    store = FleetStore([etcd.client_url], "shop", timeout=TIMEOUT)
    lease = store.grant(30)
    start = store.put("plan", "1")
    watch = store.watch("plan", start, idle=0.5)
    assert len(collect(watch, 1)) == 1
    etcd.pause()
    limit = TIMEOUT + 0.5
    error = fails_within(lambda: store.get("plan"), limit)
    assert etcd.client_url in str(error) and error.exit_code == ExitCode.NGINX_NOT_RUNNING
    fails_within(lambda: store.put("plan", "2"), limit)
    fails_within(lambda: store.create("coordinator", "lb-1"), limit)
    fails_within(lambda: store.refresh(lease), limit)
    fails_within(lambda: store.grant(5), limit)
    wait_for(lambda: watch.error is not None, timeout=3.0)
    fails_within(lambda: watch.poll(0.1), limit)
    etcd.resume()
    revision = store.put("plan", "3")
    assert store.refresh(lease) >= 1
    # A write that timed out may still land, even after later ones: the frozen etcd had it in a socket buffer.
    seen: List[Event] = []
    deadline = time.monotonic() + 5.0
    while b"3" not in [e.value for e in seen] and time.monotonic() < deadline:
        seen += collect(watch, 1, timeout=0.5, reconnecting=True)
    assert [(e.value, e.mod_revision) for e in seen if e.value != b"2"] == [(b"3", revision)]
    watch.close()


def test_a_restarted_etcd_serves_again_with_its_keys(etcd: PrivateEtcd) -> None:
    store = FleetStore([etcd.client_url], "shop", timeout=TIMEOUT)
    start = store.put("plan", "1")
    watch = store.watch("plan", start + 1, idle=0.5)
    etcd.kill()
    error = fails_within(lambda: store.get("plan"), TIMEOUT + 0.5)
    assert "ConnectionFailedError" in str(error)
    etcd.start()
    assert store.get("plan").value == b"1"  # type: ignore[union-attr]
    revision = store.put("plan", "2")
    assert [(e.value, e.mod_revision) for e in collect(watch, 1, reconnecting=True)] == [(b"2", revision)]
    watch.close()
    etcd.restart()
    assert store.get("plan").value == b"2"  # type: ignore[union-attr]


def test_a_dead_endpoint_moves_the_next_call_to_the_next(shared_etcd: PrivateEtcd) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = FleetStore([dead, shared_etcd.client_url], "endpoints", timeout=TIMEOUT)
    with pytest.raises(FleetError):
        store.put("k", "v")
    assert store.endpoint == shared_etcd.client_url
    assert store.put("k", "v") > 0


@pytest.mark.parametrize("url", ["10.0.0.5:2379", "ftp://10.0.0.5", "http://:2379", "http://h:notaport"])
def test_a_malformed_endpoint_is_refused(url: str) -> None:
    with pytest.raises(FleetError, match="etcd endpoint"):
        FleetStore([url], "shop")


def _enable_auth(etcd: PrivateEtcd, password: str) -> None:
    """etcd's own authentication on, with a root user (through the gateway, as etcdctl would)."""
    base = etcd.client_url + "/v3"
    for api, body in (("/auth/role/add", {"name": "root"}), ("/auth/user/add", {"name": "root", "password": password}),
                      ("/auth/user/grant", {"user": "root", "role": "root"}), ("/auth/enable", {})):
        answer = requests.post(base + api, json=body, timeout=5)
        assert answer.status_code == 200, (api, answer.text)


def test_a_user_and_password_log_in_and_a_refused_token_is_renewed(etcd):
    _enable_auth(etcd, "s3cret pw")
    store = FleetStore([etcd.client_url], "auth")
    with pytest.raises(FleetError, match="user name is empty"):
        store.get("k")
    with pytest.raises(FleetError, match="user 'root' could not log in: .*invalid user ID or password") as caught:
        FleetStore([etcd.client_url], "auth", user="root", password="wrong").get("k")
    assert "wrong" not in str(caught.value)
    store = FleetStore([etcd.client_url], "auth", user="root", password="s3cret pw")
    store.put("k", "v")
    assert store.get("k").value == b"v"
    # A token etcd no longer knows (its simple tokens expire after 5 minutes): logged in again, call goes through.
    store._token = "AbCdEfGhIjKlMnOp.1"
    store._session.headers["Authorization"] = store._token
    assert store.get("k").value == b"v"
    assert store._token != "AbCdEfGhIjKlMnOp.1"
