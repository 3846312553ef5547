"""The playground page in a real headless Chromium against the real server on loopback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import srt

from tests.conftest import Server, reference, sample, start_server, wer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are "
                                "not installed (scripts/system-deps installs them as root)")  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / ".test-artifacts"


@pytest.fixture
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=420,1100",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = tmp_path / "downloads"
    driver.downloads.mkdir()
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(driver.downloads)}
    )
    yield driver
    driver.quit()


def wait(predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting in the browser")


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, element_id)).select_by_value(value)


def test_console_has_no_severe_entry(server: Server, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    time.sleep(1)  # let the favicon request and any late script errors land in the log
    entries = browser.get_log("browser")
    assert not [e for e in entries if e["level"] == "SEVERE"], entries
    icon = httpx.get(server.url + "/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_model_list_opens_on_the_default_model(server: Server, browser) -> None:
    """The list is sorted (gpt-4o-transcribe-diarize comes first); the page opens on the server's default."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server.url + "/playground")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    select = Select(by_id(browser, "model"))
    assert select.options[0].get_attribute("value") == "gpt-4o-transcribe-diarize"
    assert select.first_selected_option.get_attribute("value") == "whisper-base"  # the default of `server`


def test_upload_transcribe_and_download_srt(server: Server, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    assert browser.current_url.endswith("/playground")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    choose(browser, "model", "whisper-base")
    by_id(browser, "file").send_keys(str(sample("en", "quick_brown_fox")))
    by_id(browser, "go").click()
    wait(lambda: by_id(browser, "status").text.startswith("Done"))
    text = by_id(browser, "transcript").text
    assert wer(reference("en", "quick_brown_fox"), text) <= 0.2, text
    rows = browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")
    assert rows and "00:00:00" in rows[0].text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "playground-transcript.png"))

    choose(browser, "format", "srt")
    by_id(browser, "go").click()
    wait(
        lambda: (
            by_id(browser, "status").text.startswith("Done") and "-->" in by_id(browser, "transcript").text
        )
    )
    browser.find_element(By.CSS_SELECTOR, "[data-download=srt]").click()
    downloaded = wait(lambda: next(iter(browser.downloads.glob("transcript.srt")), None), 20)
    cues = list(srt.parse(downloaded.read_text()))
    assert cues and wer(reference("en", "quick_brown_fox"), " ".join(c.content for c in cues)) <= 0.2


def test_microphone_recording_is_transcribed(server: Server, browser) -> None:
    """Chromium's fake microphone (a beeping tone) goes through MediaRecorder → webm/opus → the API."""
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/playground")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    by_id(browser, "record").click()
    wait(lambda: by_id(browser, "record").get_attribute("aria-pressed") == "true", 20)
    time.sleep(2.5)
    by_id(browser, "record").click()
    wait(lambda: "ready to transcribe" in by_id(browser, "recording").text, 20)
    by_id(browser, "go").click()
    wait(lambda: by_id(browser, "status").text.startswith("Done") or by_id(browser, "error").text)
    assert by_id(browser, "error").text == ""


def test_api_errors_are_shown(server: Server, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/playground")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    choose(browser, "model", "whisper-tiny.en")
    choose(browser, "language", "fr")
    by_id(browser, "file").send_keys(str(sample("fr", "bonjour_monde")))
    by_id(browser, "go").click()
    message = wait(lambda: by_id(browser, "error").text)
    assert message.startswith("400") and "English-only" in message


def test_wrong_api_key_is_a_readable_error(hf_home, tmp_path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--api-key", "right-key")
    try:
        browser.get(srv.url + "/playground")
        wait(lambda: "API key" in by_id(browser, "error").text)
        assert by_id(browser, "key-label").is_displayed()
        by_id(browser, "key").send_keys("wrong-key", Keys.TAB)
        wait(
            lambda: (
                "401" in by_id(browser, "error").text and "Incorrect API key" in by_id(browser, "error").text
            )
        )
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "playground-wrong-key.png"))
        key = by_id(browser, "key")
        key.clear()
        key.send_keys("right-key", Keys.TAB)
        wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
        assert by_id(browser, "error").text == ""
        stored = browser.execute_script("return sessionStorage.getItem('open-stt-key')")
        assert stored == "right-key"
        assert browser.execute_script("return localStorage.length") == 0
    finally:
        srv.stop()


def test_playground_can_be_turned_off(hf_home, tmp_path) -> None:
    srv = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", "--playground", "false")
    try:
        r = httpx.get(srv.url + "/playground")
        assert r.status_code == 404 and r.json()["error"]["message"]
    finally:
        srv.stop()


@pytest.fixture
def live_browser(tmp_path: Path):
    """Chromium whose fake microphone plays a WAV: two spoken turns with pauses."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.conversations import build, espeak
    from tests.realtime_client import silence

    lines = (
        "Good morning, thanks for joining the call today.",
        "Please send me the report before the meeting.",
    )
    pieces = [("a", line, espeak(line, "en-us")) for line in lines]
    talk = build([("s", "", silence(0.5)), *pieces, ("s", "", silence(2.0))], gap_s=1.0)
    wav = talk.write(tmp_path / "microphone.wav")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required", f"--use-file-for-fake-audio-capture={wav}",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.lines = lines
    yield driver
    driver.quit()


def test_live_mode_shows_the_spoken_words(server: Server, live_browser) -> None:
    from selenium.webdriver.common.by import By

    browser = live_browser
    browser.get(server.url + "/playground")
    wait(lambda: by_id(browser, "model").find_elements(By.TAG_NAME, "option"))
    choose(browser, "model", "whisper-tiny.en")
    by_id(browser, "live").click()
    wait(lambda: "Listening" in by_id(browser, "status").text, timeout=30)

    def final_text() -> str | None:
        text = " ".join(p.text for p in browser.find_elements(By.CSS_SELECTOR, "#transcript p.final"))
        return text if "morning" in text.lower() else None

    said = wait(final_text, timeout=90)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "playground-live.png"))
    by_id(browser, "live").click()
    first = browser.find_elements(By.CSS_SELECTOR, "#transcript p.final")[0].text
    assert wer(browser.lines[0], first) < 0.35, said
    assert not by_id(browser, "error").text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
