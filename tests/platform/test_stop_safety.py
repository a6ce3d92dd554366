"""Stopping the local platform (``python -m infra.serve``): nothing reaches real AWS, the process ends in bounded
time even under a stuck handler, whose container is killed, and a second signal ends it at once.

Each test runs the platform as a subprocess under an audit hook (``sys.addaudithook``) that records, and refuses,
every connection and DNS look-up beyond loopback, so a regression fails the test without a packet leaving. The
hook is a ``sitecustomize`` on ``PYTHONPATH``, so the handlers' containers (processes of their own) run under it
too.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from callsight.access import API_KEY_HEADER, new_api_key
from callsight.processes import Process
from infra.platform import LocalPlatform

REPO = Path(__file__).resolve().parents[2]
#: how long a stopped platform may take to exit (a generous bound: the drain asked for plus the cleanup)
EXIT_BOUND_S = 30

#: ``sitecustomize.py`` of every Python process the test starts (the platform, its containers): the audit hook
AUDIT_HOOK = textwrap.dedent('''
    import ipaddress, os, sys

    _log = open(os.environ["CALLSIGHT_TEST_AUDIT_LOG"], "a", buffering=1)

    def _loopback(host):
        if isinstance(host, bytes):
            host = host.decode()
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(str(host).strip("[]").split("%")[0]).is_loopback
        except ValueError:
            return False

    def _hook(event, args):
        if event == "socket.connect" and isinstance(args[1], tuple):
            host = args[1][0]
        elif event == "socket.getaddrinfo":
            host = args[0]
        else:
            return
        if not _loopback(host):
            _log.write(f"{event} {host!r}\\n")
            raise PermissionError(f"test audit hook: {event} to {host!r} refused")

    sys.addaudithook(_hook)
    _log.write("audit on\\n")
''')
#: ``python -c AUDITED <module or script.py> args...``: runs it (the audit hook came with the interpreter's start)
AUDITED = textwrap.dedent('''
    import runpy, sys

    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
''')

#: a platform whose PlanCalls handler never returns: it spins in a worker thread (which the interpreter would wait
#: for at exit), as a handler stuck in a loop does
STUCK_PLATFORM = textwrap.dedent('''
    import logging, sys
    from infra.platform import LocalPlatform
    from infra.serve import run

    logging.basicConfig(stream=sys.stderr, level="INFO")
    platform = LocalPlatform(port=0, postgres=False, demo_calls=5, state_file=None,
                             handler_overrides={"PlanCallsFunction": (sys.argv[1], "stuck.lambda_handler")})
    raise SystemExit(run(platform, stop_timeout=float(sys.argv[2])))
''')
STUCK_HANDLER = textwrap.dedent('''
    import os
    from concurrent.futures import ThreadPoolExecutor

    def _spin():
        while True:
            pass

    def lambda_handler(event, context):
        with open(os.environ["CALLSIGHT_TEST_STUCK_MARKER"] + ".tmp", "w") as marker:
            marker.write(str(os.getpid()))
        os.replace(os.environ["CALLSIGHT_TEST_STUCK_MARKER"] + ".tmp", os.environ["CALLSIGHT_TEST_STUCK_MARKER"])
        with ThreadPoolExecutor(1) as pool:
            pool.submit(_spin).result()
''')


#: a handler that waits for the platform to have stopped, then would write to S3 as any handler does
LATE_HANDLER = textwrap.dedent('''
    import os, time
    from callsight.dal.recordings import ObjectStore

    def lambda_handler(event, context):
        with open(event["started"] + ".tmp", "w") as started:
            started.write(str(os.getpid()))
        os.replace(event["started"] + ".tmp", event["started"])
        while not os.path.exists(event["go"]):
            time.sleep(0.05)
        try:
            ObjectStore(event["bucket"]).put_json("late.json", {"late": True})
            outcome = "sent"
        except Exception as exc:
            outcome = type(exc).__name__
        with open(event["outcome"], "w") as file:
            file.write(outcome)
''')


def _developer_profile(tmp_path: Path, profile: str = "developer") -> tuple[dict[str, str], Path]:
    """A developer's AWS configuration whose ``credential_process`` leaves a mark if anything ever resolves it."""
    touched = tmp_path / "credentials-were-read"
    config = tmp_path / "aws-config"
    section = "default" if profile == "default" else f"profile {profile}"
    config.write_text(f"[{section}]\ncredential_process = {sys.executable} -c "
                      f"\"open({str(touched)!r}, 'w').close()\"\n")
    return {"AWS_CONFIG_FILE": str(config), **({} if profile == "default" else {"AWS_PROFILE": profile})}, touched


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


class Platform:
    """A platform subprocess: its API URL (from the ready line), the demo key it was given (``headers``), its log,
    the audit hook's record."""

    def __init__(self, tmp_path: Path, target: list[str], env: dict[str, str] | None = None) -> None:
        self.headers = {API_KEY_HEADER: new_api_key()}
        self.audit = tmp_path / "audit.log"
        self.log = tmp_path / "platform.log"
        self.marker = tmp_path / "stuck.marker"
        hook_dir = tmp_path / "audit-hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
        clean = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        with self.log.open("w") as stderr:  # a file, not a pipe nobody drains
            self.process = subprocess.Popen(
                [sys.executable, "-c", AUDITED, *target], cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                env={**clean, "PYTHONUNBUFFERED": "1", "CALLSIGHT_TEST_AUDIT_LOG": str(self.audit),
                     "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), clean.get("PYTHONPATH")])),
                     "CALLSIGHT_TEST_STUCK_MARKER": str(self.marker), "CALLSIGHT_API_KEY": self.headers[API_KEY_HEADER],
                     **(env or {})})
        self.url = self._ready_url(timeout=120)

    def _ready_url(self, timeout: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no ready line in {timeout} s:\n{self.log.read_text()}"
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 4096)
                assert chunk, f"exited before it was ready:\n{self.log.read_text()}"
                data += chunk
        line = data.decode().splitlines()[0]
        assert "ready at " in line, line
        return line.split("ready at ")[1].split()[0]

    def wait_for_log(self, words: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.log.read_text():
            assert time.monotonic() < deadline, f"{words!r} never logged:\n{self.log.read_text()}"
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)

    def seconds_to_exit(self, sig: signal.Signals, bound: float = EXIT_BOUND_S) -> float:
        sent = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {bound} s after {sig.name}:\n{self.log.read_text()}") from None
        return time.monotonic() - sent

    def beyond_loopback(self, processes: int = 1) -> list[str]:
        """What the hook refused; at least ``processes`` processes (the platform, its containers) ran under it."""
        lines = self.audit.read_text().splitlines()
        assert lines[:1] == ["audit on"], lines  # the hook ran in the platform's process
        assert lines.count("audit on") >= processes, lines
        return [line for line in lines if line != "audit on"]

    def stuck_container(self) -> int:
        """The pid of the container running the stuck handler."""
        return int(self.marker.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _post_quietly(url: str, body: dict[str, str], headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, headers=headers, timeout=60)


def _last_month() -> dict[str, str]:
    today = date.today()
    return {"client_id": "demo", "start_date": (today - timedelta(days=30)).isoformat(),
            "end_date": today.isoformat()}


@pytest.mark.platform
def test_stopping_mid_run_reaches_nothing_beyond_loopback_and_ends_in_bounded_time(tmp_path: Path) -> None:
    developer, touched = _developer_profile(tmp_path)
    platform = Platform(tmp_path, ["infra.serve", "--port", "0", "--no-postgres", "--demo-calls", "40",
                                   "--amocrm-latency-ms", "1500", "--stop-timeout", "2"], env=developer)
    try:
        days = _last_month()
        # the sync start waits for its run up to ~20 s: it runs beside the test (and the stop cuts it off)
        threading.Thread(target=_post_quietly, args=(platform.url + Process.SYNC.spec.start_path, days,
                                                     platform.headers), daemon=True).start()
        deadline = time.monotonic() + 30
        while httpx.get(platform.url + Process.SYNC.spec.status_path, params=days, headers=platform.headers,
                        timeout=10).json()["overall_status"] != "processing":
            assert time.monotonic() < deadline, platform.log.read_text()
            time.sleep(0.2)
        time.sleep(1)  # FetchCalls is waiting for the slow amoCRM
        assert platform.seconds_to_exit(signal.SIGINT) < EXIT_BOUND_S
        assert platform.process.returncode == 0, platform.log.read_text()
        log = platform.log.read_text()
        assert "still running after 2 s" in log, log  # a handler outlived the drain: the case that leaked
        assert platform.beyond_loopback(processes=2) == []
        assert not touched.exists()
    finally:
        platform.kill()


def _stuck_platform(tmp_path: Path, stop_timeout: float) -> Platform:
    code_dir = tmp_path / "stuck"
    code_dir.mkdir()
    (code_dir / "stuck.py").write_text(STUCK_HANDLER)
    script = tmp_path / "stuck_platform.py"
    script.write_text(STUCK_PLATFORM)
    platform = Platform(tmp_path, [str(script), str(code_dir), str(stop_timeout)])
    answer = httpx.post(platform.url + Process.TRANSCRIBE.spec.start_path, json=_last_month(), headers=platform.headers,
                        timeout=30)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 30
    while not platform.marker.exists():
        assert time.monotonic() < deadline, platform.log.read_text()
        time.sleep(0.1)
    return platform


@pytest.mark.platform
def test_a_stuck_handler_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    platform = _stuck_platform(tmp_path, stop_timeout=2)
    try:
        assert platform.seconds_to_exit(signal.SIGINT) < EXIT_BOUND_S
        assert platform.process.returncode == 0, platform.log.read_text()
        assert "1 invocation(s) still running after 2 s: their containers were killed" in platform.log.read_text()
        assert platform.beyond_loopback(processes=2) == []
        assert _gone(platform.stuck_container())
    finally:
        platform.kill()


@pytest.mark.platform
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_ends_the_process_at_once(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    platform = _stuck_platform(tmp_path, stop_timeout=600)  # the first signal alone would wait 10 minutes
    try:
        platform.process.send_signal(sig)
        platform.wait_for_log(f"{sig.name}: stopping")
        assert platform.seconds_to_exit(sig, bound=10) < 10
        assert platform.process.returncode == code
        # the platform ended at once, without killing its containers: the orphaned one ends itself
        deadline = time.monotonic() + 10
        while not _gone(platform.stuck_container()):
            assert time.monotonic() < deadline, "the stuck handler's container outlived the platform"
            time.sleep(0.1)
    finally:
        platform.kill()


@pytest.mark.platform
def test_an_invocation_running_at_the_stop_is_killed_and_reaches_neither_aws_nor_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: the platform stops (the drain gives up on the invocation and kills its container), the
    environment is restored (no endpoint, the developer's configuration back); the handler, told only then to call
    S3, is gone: nothing is sent and no credentials are read. (Inside a container botocore refuses any host beyond
    loopback as well: test_limits.py.)"""
    developer, touched = _developer_profile(tmp_path, "default")
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in developer.items():
        monkeypatch.setenv(name, value)
    code_dir = tmp_path / "late"
    code_dir.mkdir()
    (code_dir / "late.py").write_text(LATE_HANDLER)
    files = {name: str(tmp_path / name) for name in ("started", "go", "outcome")}
    platform = LocalPlatform(port=0, postgres=False, demo_calls=5, state_file=None,
                             handler_overrides={"PlanCallsFunction": (code_dir, "late.lambda_handler")})
    platform.start()
    try:
        bucket = platform.template.buckets["RecordingsBucket"].name
        platform.boto3_client("lambda").invoke(FunctionName="PlanCallsFunction", InvocationType="Event",
                                               Payload=json.dumps({**files, "bucket": bucket}).encode())
        _wait_for(Path(files["started"]))
        container = int(Path(files["started"]).read_text())
    finally:
        unfinished = platform.stop(drain_seconds=0.5)
    assert unfinished == 1
    assert _gone(container)
    assert os.environ["AWS_CONFIG_FILE"] == developer["AWS_CONFIG_FILE"] and "AWS_ENDPOINT_URL" not in os.environ
    Path(files["go"]).touch()
    time.sleep(1)  # what a surviving handler would need to answer
    assert not Path(files["outcome"]).exists()
    assert not touched.exists()
