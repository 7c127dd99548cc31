"""A demo killed outright (SIGKILL: no handler runs) takes its daemon with it, rather than leave it serving."""

import contextlib
import os
import select
import signal
import subprocess
import sys
import urllib.request
import uuid

import pytest

from forecaster.io.broker import free_port

from kafka_support import REPO, wait_for

pytestmark = pytest.mark.kafka


def ready(port: int) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    return False


def test_a_demo_killed_with_sigkill_takes_its_serving_daemon_with_it(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FORECASTER_METRICS_PORT": str(port),
        "FORECASTER_GROUP": f"demo-{uuid.uuid4().hex[:8]}",
    }
    command = [sys.executable, "-m", "forecaster.tools.demo", "-c", str(REPO / "config.yaml"), "--rate", "20"]
    demo = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    daemon = None
    try:
        output = []
        while daemon is None:
            line = demo.stdout.readline().decode()
            assert line, f"the demo ended before starting its daemon: {''.join(output)}"
            output.append(line)
            if line.startswith("daemon: pid "):
                daemon = int(line.split()[2].rstrip(","))
        gone = os.pidfd_open(daemon)  # readable once that very process has exited
        wait_for(lambda: ready(port), 180, "the demo's daemon to serve")  # past start-up, where it would give up

        demo.send_signal(signal.SIGKILL)
        demo.wait(30)

        assert select.select([gone], [], [], 60)[0] == [gone], "the daemon outlived its demo"
    finally:
        demo.kill()
        demo.wait(30)
        if daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGKILL)  # a failed test leaves no daemon behind
