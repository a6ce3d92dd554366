"""``python -m infra.serve``: run the local platform until SIGINT/SIGTERM.

Prints one line containing ``ready``, the API URL and the demo API key (every clinic; ``CALLSIGHT_API_KEY``'s when
set: send it in the ``x-api-key`` header) on stdout once everything is up; logs go to stderr. Nothing in the
process can reach real AWS: botocore refuses any host that is not loopback and the AWS environment is dummy, for
the life of the process (``infra.isolation.isolate_from_real_aws``).

On SIGINT or SIGTERM the platform stops taking work (API, events, executions aborted), gives the
running invocations ``--stop-timeout`` seconds to end, kills the containers of those still running,
stops everything (embedded PostgreSQL included) and exits 0. A second SIGINT or SIGTERM ends the
process at once, with 130 or 143 (an orphaned container ends itself within a second).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import NoReturn

from infra.isolation import isolate_from_real_aws
from infra.lambdas import DRAIN_SECONDS
from infra.platform import RECORDING_PRIVATE_HOSTS, LocalPlatform, PlatformError

log = logging.getLogger("infra.serve")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="API port (0 = a free port; default $PORT or 8000)")
    parser.add_argument("--demo-calls", type=int, default=int(os.environ.get("DEMO_CALLS", "200")),
                        help="calls the amoCRM stub serves (default $DEMO_CALLS or 200)")
    parser.add_argument("--amocrm-latency-ms", type=int, default=0, help="latency the amoCRM stub adds")
    parser.add_argument("--amocrm-fault-rate", type=float, default=0.0, help="share of amoCRM stub requests that fail")
    parser.add_argument("--openai-latency-ms", type=int, default=0, help="latency the OpenAI stub adds")
    parser.add_argument("--openai-fault-rate", type=float, default=0.0, help="share of OpenAI stub requests that fail")
    parser.add_argument("--no-postgres", action="store_true", help="do not start the embedded PostgreSQL")
    parser.add_argument("--stop-timeout", type=float, default=DRAIN_SECONDS,
                        help=f"seconds a stop waits for running invocations (default {DRAIN_SECONDS:g})")
    parser.add_argument("--recording-private-hosts", default=os.environ.get("RECORDING_PRIVATE_HOSTS", ""),
                        help="private hosts recordings may also come from (besides the amoCRM stub): CIDRs or "
                             "host:port, comma-separated (default $RECORDING_PRIVATE_HOSTS), e.g. 127.0.0.1:9999")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--log-level", default=os.environ.get("CALLSIGHT_LOCAL_LOG_LEVEL", "INFO"))
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "pgserver", "moto", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _leave(code: int) -> NoReturn:
    """End the process now, whatever its other threads do (no atexit, no joining of worker threads)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError, RuntimeError):  # closed, or re-entered (a signal during a write)
            pass
    os._exit(code)


def _announce(platform: LocalPlatform) -> None:
    amocrm = (f"amoCRM stub {platform.amocrm_url}" if platform.amocrm_url
              else f"amoCRM https://{os.environ.get('CALLSIGHT_DEMO_AMOCRM_SUBDOMAIN')}.amocrm.ru")
    openai = f"OpenAI stub {platform.openai.url}" if platform.openai else "OpenAI (real, OPENAI_API_KEY)"
    print(f"Callsight local platform ready at {platform.api_url} ({amocrm}, {openai}, "
          f"moto {platform.moto_url}, API key: {platform.api_key}, postgres {platform.database_url or 'none'})",
          flush=True)


def run(platform: LocalPlatform, *, stop_timeout: float = DRAIN_SECONDS) -> int:
    """Start ``platform``, print the ready line, serve until SIGINT/SIGTERM, then stop within ``stop_timeout``
    seconds plus the cleanup. Returns the exit code, or leaves the process if invocations are still running."""
    isolate_from_real_aws()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if received:  # the second one: now
            _leave(128 + signum)
        received.append(signum)  # only a flag: taking a lock here could wait for the main thread it interrupted

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        platform.start()
    except Exception as exc:
        log.error("the local platform failed to start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        code = 1
    else:
        if not received:
            _announce(platform)
            # handlers log to stdout (as on Lambda); here everything after the ready line goes to stderr (containers
            # started from now on inherit it as their stdout)
            sys.stdout = sys.stderr
            while not received:
                time.sleep(0.1)
        log.info("%s: stopping (running invocations get %g s; again to end at once)",
                 signal.Signals(received[0]).name if received else "stop", stop_timeout)
    unfinished = 0
    try:
        unfinished = platform.stop(drain_seconds=stop_timeout)
    except PlatformError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        sys.stdout = sys.__stdout__
    if unfinished:  # their containers were killed; end at once all the same, whatever a thread still waits for
        log.warning("%d invocation(s) were killed at the stop", unfinished)
        _leave(code)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    platform = LocalPlatform(port=args.port, demo_calls=args.demo_calls, amocrm_latency_ms=args.amocrm_latency_ms,
                             amocrm_fault_rate=args.amocrm_fault_rate, openai_latency_ms=args.openai_latency_ms,
                             openai_fault_rate=args.openai_fault_rate, postgres=not args.no_postgres,
                             stage=args.stage,
                             parameter_overrides={RECORDING_PRIVATE_HOSTS: args.recording_private_hosts})
    return run(platform, stop_timeout=args.stop_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
