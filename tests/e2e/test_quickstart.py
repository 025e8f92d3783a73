"""docs/quickstart.md, followed literally against `make run`'s stack.

Every ```sh block of the page runs as written, in order, in a bash shell at the repository root,
with two stand-ins a reader provides by hand: the stack is this module's (block 1 is `make run`),
and the `export` block's values are the ones the stack printed. The browser step is done in a
real browser with the clicks the page names.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import browser_page
from tests.e2e.stack import PROJECT_DIR, RunningStack, demo_credentials, free_port

pytestmark = pytest.mark.e2e
QUICKSTART = PROJECT_DIR / "docs" / "quickstart.md"


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", QUICKSTART.read_text(), re.M | re.S)


def run_block(block: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


def test_the_quickstart_works_as_written(stack: RunningStack, tmp_path: Path) -> None:
    blocks = sh_blocks()
    assert blocks[0].strip() == "make run"
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", blocks[1], re.M))
    assert set(exports) == {"XPMB_URL", "XPMB_KEY_ID", "XPMB_KEY_SECRET", "XPMB_WEBHOOK_SECRET"}
    credentials = demo_credentials(stack)
    env = {
        **os.environ,
        "XPMB_URL": stack.broker_url,
        "XPMB_KEY_ID": credentials["key_id"],
        "XPMB_KEY_SECRET": credentials["key_secret"],
        "XPMB_WEBHOOK_SECRET": credentials["webhook_secret"],
        "RECEIVER_PORT": str(free_port()),  # the page's default is 9000
    }
    connect, search, receiver, endpoint, push, events = blocks[2:]

    # 3. Connect a firm: the printed connect_url, then the browser clicks the page describes.
    connect_url = run_block(connect, env).strip()
    assert connect_url.startswith(f"{stack.broker_url}/connect/")
    with browser_page() as page:
        page.goto(connect_url)
        page.click("text=Connect to Xero")
        page.select_option("select[name=user]", "alice@sandbox.example")
        page.click("text=Log in")
        expect(page.get_by_label("Bloggs & Co Chartered Accountants")).to_be_checked()
        page.click("text=Allow access")
        page.wait_for_url(re.compile(r".*/demo\?status=connected&tenant_ref=first-firm&session_id=.*"))

    # 4. Connection and search.
    found = run_block(search, env)
    assert "connection: active to Bloggs & Co Chartered Accountants" in found
    assert "Bloggs Electrical Pty Ltd" in found

    # 5. The receiver (a third terminal: it keeps running) and the endpoint pointing at it.
    log = (tmp_path / "receiver.log").open("w+")
    process = subprocess.Popen(
        ["bash", "-c", receiver], cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: "listening on" in Path(log.name).read_text(), "the receiver to listen")
        assert "- active" in run_block(endpoint, env)

        # 6. The push, and its webhook at the receiver.
        pushed = run_block(push, env)
        assert "push completed" in pushed
        assert (
            len(re.findall(r"^  (ann|bob|entity) (created|matched|reused) [0-9a-f-]{36}$", pushed, re.M)) == 3
        )
        wait_for(lambda: "received push.completed" in Path(log.name).read_text(), "push.completed")

        # 7. The event log has it too, delivered.
        logged = run_block(events, env)
        assert re.search(r"^evt_\S+ push\.completed delivered$", logged, re.M), logged
    finally:
        process.terminate()
        process.wait(10)
        log.close()
    assert "rejected" not in Path(log.name).read_text()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
