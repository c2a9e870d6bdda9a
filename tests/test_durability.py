"""Crash honesty: what a SIGKILL loses is counted on restart; judge followers die with `serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.store import Store

BIN = Path(sys.executable).parent / "shadoweval"


def _serve(cfg: Path, port: int, db: Path, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN), "serve", "--config", str(cfg), "--port", str(port), "--db", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            r = httpx.get(url + "/healthz", timeout=1)
            if r.status_code in (200, 503):
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _config(tmp_path: Path, production_url: str, store: str = "", judges: str = "background = false") -> Path:
    cfg = tmp_path / "shadoweval.toml"
    cfg.write_text(f'[production]\nbase_url = "{production_url}/v1"\n[store]\n{store}\n[judges]\n{judges}\n')
    return cfg


@pytest.mark.parametrize("durability", ["batched", "strict"])
def test_sigkill_loss_is_counted_on_restart(tmp_path, durability):
    prod = MockLLM(name="prod")
    n = 30
    with ThreadedServer(prod) as ps:
        # a long flush interval: in batched mode nothing answered here is committed before the kill
        cfg = _config(tmp_path, ps.url, f'flush_interval_ms = 5000\ndurability = "{durability}"')
        port, db = free_port(), tmp_path / "crash.db"
        url = f"http://127.0.0.1:{port}"
        proc = _serve(cfg, port, db)
        try:
            _wait_healthy(url, proc)
            client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
            for i in range(n):
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                assert r.choices[0].message.content == f"prod says: q{i}"
            proc.kill()  # SIGKILL: no drain, no flush
            proc.wait()
        finally:
            _stop(proc)
        stored = Store(db).stats()[0]
        lost = n - stored
        if durability == "strict":
            assert stored == n  # every answer was committed before the client had it
        else:
            assert lost == n

        proc = _serve(cfg, port, db)
        try:
            health = _wait_healthy(url, proc)
            assert health["store"]["lost"] == lost
            assert health["store"]["lost_by_reason"] == ({"crash": lost} if lost else {})
            metrics = httpx.get(url + "/metrics").text
            if lost:
                assert f'shadoweval_store_lost_total{{reason="crash"}} {lost}' in metrics
            else:
                assert 'reason="crash"' not in metrics
        finally:
            _stop(proc)
        assert proc.returncode == 0
    out = subprocess.run([str(BIN), "stats", "--db", str(db)], capture_output=True, text=True, check=True).stdout
    assert (f"store losses (records not kept): {lost} (crash {lost})" if lost
            else "store losses (records not kept): none") in out
    data = json.loads(subprocess.run([str(BIN), "stats", "--db", str(db), "--json"], capture_output=True,
                                     check=True).stdout)
    assert data["store_lost"] == ({"crash": lost} if lost else {})
    assert not list((tmp_path / ".crash.db.runs").iterdir())  # the clean stop removed its journal


def test_store_counts_what_a_killed_process_had_queued(tmp_path):
    db = tmp_path / "s.db"
    code = textwrap.dedent(f"""
        import os, signal, time
        from shadoweval.core.store import Store
        from shadoweval.core.types import Exchange, new_id
        s = Store({str(db)!r}, flush_interval_ms=60_000)
        s.start()
        s.submit(Exchange(new_id(), time.time(), "/v1/chat/completions", {{}}))
        assert s.flush()  # one committed
        for _ in range(7):
            s.submit(Exchange(new_id(), time.time(), "/v1/chat/completions", {{}}))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    assert Store(db).stats()[0] == 1

    reader = Store(db)  # a store that does not recover (a CLI, the judges) leaves the count alone
    reader.start()
    reader.stop()
    assert reader.status().lost == 0

    store = Store(db, recover=True)
    store.start()
    try:
        st = store.status()
        assert st.lost == 7 and st.lost_by_reason == {"crash": 7}
        assert st.ok  # an earlier run's crash is reported, but this store is not losing anything
        assert store.metrics.get("shadoweval_store_lost_total", reason="crash") == 7
    finally:
        store.stop()
    assert Store(db).counters()[("shadoweval_store_lost_total", (("reason", "crash"),))] == 7
    again = Store(db, recover=True)  # claimed once: a second start does not count it again
    again.start()
    again.stop()
    assert again.status().lost == 0


def test_store_is_not_ok_while_losing_records(tmp_path):
    store = Store(tmp_path / "s.db", queue_size=1)
    # not started: the queue fills and the next record is lost
    assert store.submit(lambda: [])
    assert not store.submit(lambda: [])
    st = store.status()
    assert st.lost_by_reason == {"queue_full": 1} and not st.ok


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_background_judge_dies_with_a_killed_serve_and_never_doubles(tmp_path):
    prod = MockLLM(name="prod")
    with ThreadedServer(prod) as ps:
        cfg = _config(tmp_path, ps.url, judges='background = true\noffline = ["checks"]\nembedder = "hashing"\n'
                                               'interval_s = 1')
        port, db = free_port(), tmp_path / "judge.db"
        url = f"http://127.0.0.1:{port}"
        first = _serve(cfg, port, db)
        second = third = None
        try:
            _wait_healthy(url, first)
            assert _wait_for(lambda: len(_children(first.pid)) == 1, 10)
            (judge1,) = _children(first.pid)
            first.kill()
            first.wait()
            assert _wait_for(lambda: not _alive(judge1), 10), "the judge follower outlived its killed serve"

            # two proxies on one database (or a restart racing the old follower): one follower judges
            second = _serve(cfg, port, db)
            _wait_healthy(url, second)
            port3 = free_port()
            third = _serve(cfg, port3, db)
            _wait_healthy(f"http://127.0.0.1:{port3}", third)
            assert _wait_for(lambda: len(_children(second.pid)) == 1 and len(_children(third.pid)) == 1, 10)
            (judge3,) = _children(third.pid)
            time.sleep(3)
            third.send_signal(signal.SIGTERM)
            third.wait(30)
            err = third.stderr.read().decode() if third.stderr else ""
            assert "another judge follower runs on this database" in err
            assert not _alive(judge3)
        finally:
            for p in (first, second, third):
                if p is not None:
                    _stop(p)


def test_a_second_follower_waits_for_the_first(tmp_path):
    db = tmp_path / "f.db"
    made = Store(db)
    made.start()
    made.stop()
    cfg = tmp_path / "judges.toml"
    cfg.write_text('[judges]\noffline = ["checks"]\nembedder = "hashing"\n')
    cmd = [str(BIN), "judge", "run", "--follow", "--db", str(db), "--config", str(cfg), "--interval", "0.2"]
    one = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    two = None
    try:
        time.sleep(3)
        two = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        time.sleep(3)
        assert two.poll() is None
        one.send_signal(signal.SIGTERM)
        assert one.wait(30) == 0
        two.send_signal(signal.SIGTERM)
        assert two.wait(30) in (0, -signal.SIGTERM)  # it may be taking over (starting up) right now
        assert "another judge follower runs on this database" in two.stderr.read().decode()
        assert "another judge follower" not in one.stderr.read().decode()
    finally:
        for p in (one, two):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
