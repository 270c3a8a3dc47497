"""
The status page in a real browser: Debian's chromium, headless, driven by selenium
through chromedriver, against a real twistd running the example apps.
"""

from __future__ import annotations

import os
import uuid

import pytest

from ..e2e.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "page-token-" + uuid.uuid4().hex
WAIT = 60

CONFIG = """
[bus]
name = "page"
grace_period = 2

[http]
port = {port}
token_env = "SCBUS_TEST_HTTP_TOKEN"

[apps.clock]
builder = "apps.clock:make_clock"
config = {{ every = 0.5 }}

[apps.squares]
builder = "apps.squares:make_squares"
config = {{ milestone = 3 }}

[apps.flaky]
builder = "apps.flaky:make_flaky"
config = {{ unlucky = 4 }}

[apps.errors]
builder = "apps.error_collector:make_error_collector"
threads = 1
config = {{ path = "{errors}" }}

[apps.heartbeat]
builder = "apps.heartbeat_monitor:make_heartbeat_monitor"
config = {{ every = 1, warn_after = 5 }}
"""

EXAMPLE_APPS = ["clock", "squares", "flaky", "errors", "heartbeat"]


@pytest.fixture
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {', '.join(missing)} missing")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_shows_the_example_apps_and_replays(tmp_path, run_twistd, monkeypatch, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SCBUS_TEST_HTTP_TOKEN", TOKEN)
    port = free_port()
    config = tmp_path / "page.toml"
    config.write_text(CONFIG.format(port=port, errors=tmp_path / "errors.jsonl"))
    run_twistd(str(tmp_path), str(config))
    # The page redraws itself every 2 s: an element found may be replaced before it is
    # used, so each read and click is retried until it lands on a live element.
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])

    def text(selector: str) -> str:
        return wait.until(lambda d: [d.find_element(By.CSS_SELECTOR, selector).text])[0]

    def click(selector: str) -> None:
        def clicked(d) -> bool:
            element = d.find_element(By.CSS_SELECTOR, selector)
            if not element.is_enabled():
                return False
            element.click()
            return True

        wait.until(clicked)

    def app_cell(app: str, column: str) -> str:
        return text(f'#apps tr[data-app="{app}"] td.{column}')

    # twistd is listening once /live answers; the page loads from it
    wait.until(lambda _: _loads(browser, f"http://127.0.0.1:{port}/"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#apps tbody tr")) == 5)
    shown = browser.execute_script("return [...document.querySelectorAll('#apps tbody tr')].map(r => r.dataset.app)")
    assert shown == EXAMPLE_APPS
    assert text("#connected") == "connected"

    # the numbers move: squares handles more ticks with each poll
    first = int(app_cell("squares", "handled"))
    wait.until(lambda _: int(app_cell("squares", "handled")) >= first + 4)
    # the clock handles no message but runs its idle handler every second: counted apart
    runs = int(app_cell("clock", "idle-runs"))
    wait.until(lambda _: int(app_cell("clock", "idle-runs")) >= runs + 2)
    assert int(app_cell("squares", "idle-runs")) == 0
    wait.until(lambda _: app_cell("squares", "rate") not in ("–", "0.0"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#errors .error"))
    assert "is a multiple of 4" in text("#errors .error .what")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#apps tr[data-app="squares"] svg.plot polyline'))

    # replay: writing needs the token; no app takes a Milestone, so the replay is refused
    # and says why, and the entry stays
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#unrouted tr[data-id]"))
    entry_id, body = browser.execute_script(
        "const row = document.querySelector('#unrouted tr[data-id]');"
        "return [row.dataset.id, row.querySelector('td.body').textContent]"
    )
    button = f'[data-testid="replay-{entry_id}"]'
    assert browser.execute_script(f"return document.querySelector('{button}').disabled") is True
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    click(button)
    wait.until(lambda d: d.find_element(By.ID, "action-result").text.startswith("not replayed"))
    assert browser.find_element(By.ID, "action-result").text == (
        f"not replayed: no app subscribes to squares.Milestone yet; {entry_id} stays in unrouted"
    )
    kept = browser.execute_script(f"return document.querySelector('#unrouted tr[data-id=\"{entry_id}\"] td.body').textContent")
    assert kept == body

    # pause from the page
    click('[data-testid="pause-clock"]')
    wait.until(lambda _: text('#apps tr[data-app="clock"] .state') == "paused")

    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    refused = f"/set-aside/unrouted/{entry_id}/replay - Failed to load resource: the server responded with a status of 409"
    assert [e for e in problems if refused not in e["message"]] == []  # the refused replay, and nothing else
    if os.environ.get("SCBUS_SCREENSHOT"):
        browser.save_screenshot(os.environ["SCBUS_SCREENSHOT"])


def test_the_token_panel_names_the_variable_that_is_not_set(tmp_path, run_twistd, monkeypatch, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.delenv("SCBUS_TEST_HTTP_TOKEN", raising=False)  # token_env names it; it is not set
    port = free_port()
    config = tmp_path / "page.toml"
    config.write_text(CONFIG.format(port=port, errors=tmp_path / "errors.jsonl"))
    run_twistd(str(tmp_path), str(config))
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
    wait.until(lambda _: _loads(browser, f"http://127.0.0.1:{port}/"))
    wait.until(lambda d: d.find_element(By.ID, "token-note").text)
    assert browser.find_element(By.ID, "token-note").text == (
        "Writing endpoints are off: SCBUS_TEST_HTTP_TOKEN (the [http] token_env) is not set in the bus's "
        "environment; set it and restart the bus."
    )
    assert browser.find_element(By.ID, "token-form").is_displayed() is False


def _loads(browser, url: str) -> bool:
    try:
        browser.get(url)
    except Exception:
        return False
    return browser.title.startswith("scbus")
