"""The playground served for real, and Debian's Chromium driving its page through Selenium."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(session, **kw):
    """The session's page and API on a free loopback port, for the block; the base URL."""
    from memit.serve import make_server

    port = free_port()
    server = make_server(session, port=port, **kw)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the playground server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def chromium(tmp: Path):
    """Headless Chromium with downloads going to ``tmp/downloads``; skips when it is not installed."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them with apt-get; "
                    "that failed or was not allowed here)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1800", f"--user-data-dir={tmp / 'profile'}"):
        opts.add_argument(flag)
    (tmp / "downloads").mkdir(parents=True, exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(tmp / "downloads"),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp / "downloads")})
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check, timeout: float = 60, what: str = "the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def enter_facts(driver, url: str, facts: list[dict]) -> None:
    """Load the page and type ``facts`` into its table, one row each."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(lambda: driver.find_element(By.ID, "model").text != "loading…", what="the model's name")
    for i, fact in enumerate(facts):
        if i:
            driver.find_element(By.ID, "add-fact").click()
        row = driver.find_elements(By.CSS_SELECTOR, "#facts tbody tr")[i]
        for key, value in fact.items():
            row.find_element(By.CSS_SELECTOR, f"input[data-k='{key}']").send_keys(value)


def edit_and_wait(driver, timeout: float = 600) -> str:
    """Click edit; the summary line once the edit is done."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "edit").click()
    return wait_for(lambda: "facts hold" in (t := driver.find_element(By.ID, "summary").text) and t, timeout,
                    "the edit's result")


def probe(driver, prompt: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    driver.find_element(By.ID, "probe").click()
    wait_for(lambda: driver.find_element(By.ID, "probe-out").is_displayed(), what="the probe")
    return driver.find_element(By.ID, "gen-before").text, driver.find_element(By.ID, "gen-after").text


def download(driver, tmp: Path, link: str, name: str) -> Path:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, link).click()
    file = tmp / "downloads" / name
    wait_for(lambda: file.is_file() and not list((tmp / "downloads").glob("*.crdownload")), what=f"the download {name}")
    return file
