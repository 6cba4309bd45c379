"""The dashboard in a real browser (issue 21): Debian's headless Chromium driven by selenium.

A real gateway (loaded from a TOML file, so the Reload button has something to re-read) runs in
the test's nursery with a fake OpenAI upstream, the built-in mock and a local engine
(``tests/engine_server.py``). The browser loads ``/ui`` from it over loopback; selenium's
blocking calls run in a worker thread so the gateway keeps serving meanwhile.

Each view is saved as a PNG under ``tests/ui/screenshots/`` (a test artefact; the ones in
``docs/dashboard/`` are copies of a run's). A machine without Chromium fails these tests with
the command that installs it -- they are never skipped.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio

from routecodex_trio import load_config, serve

from ..fakes import FakeOpenAI, start_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

    from routecodex_trio import Gateway

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
SCREENSHOTS: Final = Path(__file__).resolve().parent / "screenshots"
ENGINE: Final = Path(__file__).resolve().parent.parent / "engine_server.py"
CLIENT_KEY: Final = "client-key-3a9d51"
ADMIN_KEY: Final = "admin-key-7b20ce44"
# A prompt that must never reach the page (the feed carries no message content).
PROMPT: Final = "PROMPT-never-on-the-page-41c7"
WAIT_S: Final = 20.0


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile, no network of its own."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"the dashboard browser tests need {' and '.join(missing)}: run tests/ui/ensure_browser.sh "
            "as root (apt-get install chromium chromium-driver); the README test command does",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"routecodex-ui-profile-{os.getpid()}"
    shutil.rmtree(profile, ignore_errors=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1500,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking selenium call, off the event loop (the gateway keeps serving)."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args))


async def wait_until(driver: WebDriver, script: str, *args: Any, timeout_s: float = WAIT_S) -> Any:
    """Poll a JavaScript expression (``return ...``) until it is truthy; fail with its last value."""
    last: Any = None
    with trio.move_on_after(timeout_s):
        while True:
            last = await run(driver.execute_script, script, *args)
            if last:
                return last
            await trio.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for: {script} (last value {last!r})")


async def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert await run(driver.save_screenshot, str(path)), f"could not save {path}"
    return path


async def click(driver: WebDriver, css: str) -> None:
    from selenium.webdriver.common.by import By

    element = await run(driver.find_element, By.CSS_SELECTOR, css)
    await run(element.click)


def write_config(path: Path, upstream: str, tmp: Path, *, extra_model: str = "") -> None:
    engine_cmd = shlex.join([sys.executable, str(ENGINE), "--port", "${PORT}", "--name", "local"])
    models = '["gpt-4o-mini", "error429"' + (f', "{extra_model}"' if extra_model else "") + "]"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = 2
api_keys = ["{CLIENT_KEY}"]
admin_keys = ["{ADMIN_KEY}"]

[providers.fake]
type = "openai-chat"
base_url = "{upstream}/v1"
api_keys = ["sk-upstream-one-1111", "sk-upstream-two-2222"]
models = {models}

[providers.mock]
type = "mock"
models = ["m1"]

[providers.local]
type = "openai-chat"
models = ["m"]
[providers.local.engine]
cmd = {engine_cmd!r}
ttl = 0

[routing]
default = ["fake.gpt-4o-mini", "mock.m1"]
background = ["mock.m1"]

[snapshots]
enabled = true
dir = "{tmp / "snapshots"}"

[engines]
log_dir = "{tmp / "engine-logs"}"
"""
    )
    path.chmod(0o600)


async def traffic(url: str, *, ok: int = 6, cooled: int = 1) -> list[str]:
    """Chat requests through the gateway (official shape, raw httpx); returns their ids."""
    ids = []
    async with httpx.AsyncClient(base_url=url, timeout=20, headers={"x-api-key": CLIENT_KEY}) as http:
        for i in range(ok):
            model = ("claude-3-haiku", "any-model", "mock.m1")[i % 3]
            body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": i % 2 == 0}
            response = await http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        for _ in range(cooled):
            body = {"model": "fake.error429", "messages": [{"role": "user", "content": PROMPT}]}
            response = await http.post("/v1/chat/completions", json=body)
            assert response.status_code == 429, response.text
            ids.append(response.headers["x-request-id"])
    return ids


async def test_dashboard_in_a_real_browser(browser: WebDriver, nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeOpenAI()
    upstream = await start_app(nursery, fake)
    config_path = tmp_path / "gateway.toml"
    write_config(config_path, upstream, tmp_path)
    gateway: Gateway = await nursery.start(serve, load_config(config_path))
    driver = browser

    # -- login: the page asks for the admin key once, keeps it in the tab's sessionStorage.
    await run(driver.get, gateway.url + "/ui")
    await wait_until(driver, "return !document.getElementById('login').hidden")
    await screenshot(driver, "login")
    await run(driver.execute_script, "document.getElementById('login-key').value = arguments[0]", CLIENT_KEY)
    await click(driver, "#login-submit")
    message = await wait_until(driver, "return document.getElementById('login-error').textContent")
    assert "admin_keys" in message  # a client key is refused (403) and the page says why
    await run(driver.execute_script, "document.getElementById('login-key').value = arguments[0]", ADMIN_KEY)
    await click(driver, "#login-submit")
    await wait_until(driver, "return !document.getElementById('main').hidden")
    assert (
        await run(driver.execute_script, "return sessionStorage.getItem('routecodex.adminKey')") == ADMIN_KEY
    )
    assert ADMIN_KEY not in driver.current_url
    await wait_until(driver, "return document.getElementById('feed-state').className === 'dot on'")

    # -- live requests: rows appear while the page is open, newest first.
    ids = await traffic(gateway.url)
    shown = await wait_until(
        driver,
        "const ids = [...document.querySelectorAll('#requests tbody tr')].map(r => r.dataset.id);"
        "return ids.length >= arguments[0] ? ids : null;",
        len(ids),
    )
    assert shown[: len(ids)] == list(reversed(ids))
    cells = await run(
        driver.execute_script,
        "return [...document.querySelector('#requests tbody tr:last-child').cells].map(c => c.textContent)",
    )
    assert cells[1] == "/v1/chat/completions"
    assert cells[2] == "openai-chat → mock"
    assert cells[3].startswith("background")  # claude-3-haiku: Claude Code's background model
    assert cells[4] == "mock.m1"
    assert cells[6] == "200"
    page_text = await run(driver.execute_script, "return document.body.innerText")
    assert PROMPT not in page_text
    # A row's routing decision and (snapshots are on) its stages.
    await click(driver, f'#requests tr[data-id="{ids[1]}"]')
    detail = await wait_until(
        driver,
        "const d = document.getElementById('detail');"
        "const stages = document.querySelectorAll('#detail-stages details').length;"
        "return !d.hidden && stages ? d.innerText : null;",
    )
    assert "candidates" in detail and "why" in detail
    stages = await run(
        driver.execute_script,
        "return [...document.querySelectorAll('#detail-stages summary')].map(s => s.textContent)",
    )
    assert stages[0] == "01-client-request.json" and "02-routing.json" in stages
    await run(driver.execute_script, "document.querySelector('#detail-stages details').open = true")
    await screenshot(driver, "requests")

    # -- targets: the 429 cooled fake.error429's keys, and the page says why.
    await run(driver.execute_script, "location.hash = '#targets'")
    reason = await wait_until(
        driver,
        "const row = document.querySelector('#targets tr.cooling');"
        "return row ? row.querySelector('td.reason').textContent : null;",
    )
    assert "429" in reason and "rate limited" in reason and "Retry-After 7 s" in reason
    cooled = await run(
        driver.execute_script, "return document.querySelector('#targets tr.cooling').dataset.target"
    )
    assert cooled.startswith("fake.error429#")
    await screenshot(driver, "targets")
    await click(driver, f'#targets tr[data-target="{cooled}"] button')
    await wait_until(
        driver,
        "return !document.querySelector(`#targets tr[data-target='${arguments[0]}']`).className",
        cooled,
    )
    health = {h.health_key: h for h in gateway._app.pipeline.router.health.snapshot()}
    assert health[cooled].healthy

    # -- engines: start the local engine from the page, then its stop button stops it.
    engines = gateway._app.engines
    assert engines is not None
    await run(driver.execute_script, "location.hash = '#engines'")
    await wait_until(driver, "return document.querySelector('article.engine[data-engine=\"local\"]')")
    await click(driver, 'article.engine[data-engine="local"] button.start')
    await wait_until(
        driver,
        "return document.querySelector('article.engine[data-engine=\"local\"]').dataset.state === 'ready'",
    )
    assert [s.state for s in engines.statuses()] == ["ready"]
    await wait_until(
        driver,
        "const log = document.querySelector('article.engine[data-engine=\"local\"] pre.log');"
        "return log.textContent.length > 20;",
    )
    await screenshot(driver, "engines")
    pid = engines.statuses()[0].pid
    await click(driver, 'article.engine[data-engine="local"] button.stop')
    await wait_until(
        driver,
        "return document.querySelector('article.engine[data-engine=\"local\"]').dataset.state === 'stopped'",
    )
    assert [s.state for s in engines.statuses()] == ["stopped"]
    assert pid is not None and _gone(pid)

    # -- charts: an hour of buckets; this run's traffic is in the last one.
    await traffic(gateway.url, ok=9, cooled=2)
    await run(driver.execute_script, "location.hash = '#charts'")
    legends = await wait_until(
        driver,
        "const t = document.getElementById('legend-requests').innerText;"
        "return t.includes('2xx') && t.includes('429') ? t : null;",
    )
    assert "2xx" in legends
    tokens = await run(driver.execute_script, "return document.getElementById('legend-tokens').innerText")
    assert "fake.gpt-4o-mini" in tokens or "mock.m1" in tokens
    await screenshot(driver, "charts")

    # -- config: secrets redacted; the Reload button re-reads the file.
    await run(driver.execute_script, "location.hash = '#config'")
    text = await wait_until(
        driver, "const t = document.getElementById('config').textContent; return t.length > 50 ? t : null;"
    )
    assert "***" in text
    for secret in (ADMIN_KEY, CLIENT_KEY, "sk-upstream-one-1111", "sk-upstream-two-2222"):
        assert secret not in text
    assert "gpt-4.1-added" not in text
    write_config(config_path, upstream, tmp_path, extra_model="gpt-4.1-added")
    await click(driver, "#reload")
    result = await wait_until(
        driver,
        "const r = document.getElementById('reload-result');"
        "return r.className === 'ok' ? r.textContent : null;",
    )
    assert result.startswith("reloaded")
    await wait_until(driver, "return document.getElementById('config').textContent.includes('gpt-4.1-added')")
    assert any(m.id == "gpt-4.1-added" for m in gateway._app.pipeline.config.providers["fake"].models)
    await screenshot(driver, "config")

    # Rows keep arriving after the reload, on the same feed.
    more = await traffic(gateway.url, ok=1, cooled=0)
    await run(driver.execute_script, "location.hash = '#requests'")
    await wait_until(
        driver, "return document.querySelector('#requests tbody tr').dataset.id === arguments[0]", more[0]
    )
    await run(driver.get, "about:blank")  # hang up the feed before the gateway drains
    gateway.shutdown()


def _gone(pid: int) -> bool:
    """The process has exited (no /proc entry, or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
