"""The listening test end to end in a real headless browser (Debian's chromium + chromedriver):
`python -m trainer listen` as typed, a rater scoring every clip, then `listen-summary`.

Marked `browser`: `make test-browser` installs Debian's chromium and chromium-driver when missing;
without them this test is skipped with the reason. No driver or browser is ever downloaded."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.storage import Store
from tests.conftest import PYTHON

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: `make test-browser` installs Debian's chromium and "
                    "chromium-driver")


def _fake_evaluation(run: Store, phase: int, items: list[str]) -> None:
    """What `python -m trainer evaluate` leaves for the listening test: summary + clips."""
    rng = np.random.default_rng(phase)
    with tempfile.TemporaryDirectory() as tmp:
        for item in items:
            t = np.arange(int(0.4 * 24_000)) / 24_000
            clip = 0.2 * np.sin(2 * np.pi * (120 + 40 * phase) * t) + 0.01 * rng.normal(size=t.size)
            path = Path(tmp) / f"{item}.wav"
            sf.write(path, clip, 24_000, subtype="PCM_16")
            run.put_file(path, f"eval/phase{phase}/audio/{item}.wav")
    run.put_json(f"eval/phase{phase}/summary.json", {"phase": phase})


def test_a_rater_scores_every_clip_in_a_headless_browser(tmp_path, make_settings):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import subprocess_env

    settings = make_settings()
    run = Store.for_run(settings)
    for phase in (2, 3):
        _fake_evaluation(run, phase, ["prompt_malay_00", "prompt_particle_lah_00"])
    db = tmp_path / "ratings.sqlite"
    env = subprocess_env(settings)
    server = subprocess.Popen([PYTHON, "-m", "trainer", "listen", "--phases", "2,3", "--port", "0", "--db", str(db)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = None
    try:
        url = None
        for line in server.stdout:  # the server says where it listens once it is ready
            if line.startswith("open http://127.0.0.1:"):
                url = line.split()[1]
                break
        assert url, "the listening server did not start"

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        driver.find_element(By.ID, "rater").send_keys("tester")
        driver.find_element(By.ID, "start").click()
        kinds = []
        for _ in range(20):
            if driver.find_element(By.ID, "done").is_displayed():
                break
            # Rating buttons are enabled only when every clip of the trial has loaded in the browser.
            wait.until(lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "#mos button, #ab button")
                                       if b.is_displayed() and b.is_enabled()), False))
            audio = driver.find_elements(By.CSS_SELECTOR, "#clips audio")
            assert all(driver.execute_script("return arguments[0].duration", a) > 0.3 for a in audio)
            assert all("/audio/" in a.get_attribute("src") and "phase" not in a.get_attribute("src") for a in audio)
            progress = driver.find_element(By.ID, "progress").text
            kinds.append("ab" if len(audio) == 2 else "mos")
            mos = driver.find_element(By.ID, "mos-4")
            (mos if mos.is_displayed() else driver.find_element(By.ID, "choose-B")).click()
            wait.until(lambda d, before=progress: d.find_element(By.ID, "progress").text != before
                       or d.find_element(By.ID, "done").is_displayed())
        wait.until(ec.visibility_of_element_located((By.ID, "done")))
        assert sorted(kinds) == ["ab", "ab", "mos", "mos", "mos", "mos"]
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)

    out = subprocess.run([PYTHON, "-m", "trainer", "listen-summary", "--db", str(db)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 rater(s)" in out.stdout
    assert "phase2       4.00" in out.stdout and "phase3       4.00" in out.stdout
    assert "phase2 vs phase3: " in out.stdout and "of 2" in out.stdout
