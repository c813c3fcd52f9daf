"""The status page in a real browser, during and after a failover in the lab.

Debian's headless Chromium, driven by selenium through Debian's chromedriver (both installed
by scripts/system-packages.sh); nothing is downloaded. The lab is the real loop (simulated
nodes, Prometheus, Alertmanager, the responder under gunicorn). The screenshot is kept in the
test's tmp dir and copied to test-artifacts/status-page.png in the repository.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from responder.lab import Lab, LabSettings

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make system-packages` (scripts/system-packages.sh)")
    return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile; chromedriver listens on a free loopback port."""
    options = webdriver.ChromeOptions()
    options.binary_location = binary("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(binary("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The lab with a 6 s hold: time enough to read the page while the fault is pending."""
    with Lab(LabSettings(hold="6s")) as lab:
        lab.wait_until_watching()
        yield lab


def arrived(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """Waits for the page a form submission navigates to (a click returns before it loads)."""
    return WebDriverWait(driver, 10)


def field(driver: WebDriver, name: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text)


def screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page: the window is made as tall as the document first."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, max(height + 200, 600))  # + the window's own frame
    driver.save_screenshot(str(path))


def test_operator_reads_the_failover_on_the_status_page(
    lab: Lab, browser: WebDriver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Log in by the form, see the countdown while the fault is held, then node-b active, done."""
    page = lab.url("responder") + "/"
    browser.get(page)
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.ID, "login").click()
    error = arrived(browser).until(ec.presence_of_element_located((By.ID, "login-error")))
    assert "Wrong token" in error.text
    browser.find_element(By.ID, "token").send_keys(lab.operator_token)
    browser.find_element(By.ID, "login").click()
    arrived(browser).until(ec.url_to_be(page))
    assert browser.find_element(By.ID, "role").text == "operator"
    assert field(browser, "active-node") == "node-a" and field(browser, "phase") == "armed"

    lab.inject("node-a", "vc_down")
    lab.wait_for("the fault to be held", lambda: lab.pair()["phase"] == "pending", timeout=30)
    browser.get(page)
    countdown = field(browser, "countdown")
    assert re.fullmatch(r"failover in [0-9]+ s, at [0-9]{2}:[0-9]{2}:[0-9]{2}Z", countdown)
    assert field(browser, "phase") == "pending"
    screenshot(browser, tmp_path / "status-page-pending.png")

    def finished() -> bool:
        failover = lab.pair()["failover"]
        return failover is not None and failover["step"] in ("done", "failed", "aborted")

    lab.wait_for("the failover to finish", finished, timeout=90)
    browser.get(page)
    assert field(browser, "active-node") == "node-b"
    assert field(browser, "outcome") == "done"
    roles = {
        row.get_attribute("data-node"): row.find_element(
            By.CSS_SELECTOR, '[data-field="role"]'
        ).text
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-node]")
    }
    assert roles == {"node-a": "fenced", "node-b": "active"}
    timings = field(browser, "timings")
    assert "fencing" in timings and "activating" in timings
    assert float(field(browser, "total")) > 0
    assert "failover:done" in field(browser, "events")
    assert lab.operator_token not in browser.page_source

    shot = tmp_path / "status-page.png"
    screenshot(browser, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "status-page.png"
    shutil.copyfile(shot, kept)
    with capsys.disabled():
        print(f"\nstatus page screenshot: {shot} (copied to {kept})")
