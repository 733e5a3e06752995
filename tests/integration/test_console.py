"""The web console of a running worker, in headless Chromium: sign-in, turning a destination off and on, policies,
backfills through the form; and the CSRF and session checks of every POST route, over plain HTTP."""

import asyncio
import http.client
import json
import os
import re
import time
import urllib.parse

import pytest

from stream.kafka import ensure_topics
from tests.integration.conftest import ADMIN_TOKEN, wait_until
from tests.integration.test_admin import call, exported, exported_with_hourly_backfills
from tests.integration.test_crash import EVENTS, produce

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through its chromedriver; both paths given, so Selenium Manager is never run."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (.ci/install-ops-tools)")
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def driver(browser, tmp_path):
    """The browser, signed out; the last page it showed is kept in tmp_path (last.png, last.html)."""
    browser.delete_all_cookies()
    browser.set_window_size(1280, 900)
    yield browser
    browser.save_screenshot(str(tmp_path / "last.png"))
    (tmp_path / "last.html").write_text(browser.page_source)


def base(settings):
    return f"http://127.0.0.1:{settings.worker.http_port}/console"


def console_up(settings, port=None):
    """Wait until the worker's console answers, having read the sessions logged out (503 until then)."""
    def up():
        try:
            return http_request(settings, "GET", "/console/login", port=port)[0] == 200 and \
                http_request(settings, "GET", "/console/", port=port)[0] != 503
        except OSError:
            return False
    wait_until(up, 60, "the console")


def http_request(settings, method, path, form=None, cookie=None, port=None, headers=None, set_cookies=None):
    """(status, headers, body) of a request to the worker (``port``: another worker's); ``set_cookies``: a list
    that gets every Set-Cookie header of the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port or settings.worker.http_port, timeout=60)
    headers = {**({"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}),
               **(headers or {})}
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=urllib.parse.urlencode(form) if form is not None else None, headers=headers)
        r = conn.getresponse()
        if set_cookies is not None:
            set_cookies.extend(r.msg.get_all("Set-Cookie") or [])
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def sign_in(driver, settings, token=ADMIN_TOKEN):
    from selenium.webdriver.common.by import By
    driver.get(f"{base(settings)}/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def submit(driver, element, timeout=60):
    """Click a submit button and wait for the page the POST (and its redirect) leads to."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def navigated(_):
        try:
            old.is_enabled()
            return False
        except WebDriverException:   # stale, or (mid-navigation) "does not belong to the document"
            return True
    WebDriverWait(driver, timeout).until(navigated)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.readyState") == "complete")


def text(driver):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.TAG_NAME, "main").text


def wait_for(driver, predicate, timeout, what):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return predicate(d)
        except WebDriverException:      # the page reloaded under us: a stale element, or one of the old document
            return False
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check, f"timed out waiting for {what}")


def table_rows(page, table_id):
    """The cells' texts of each body row of a table of the page, its times written T."""
    import html
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [[re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", "T",
                    " ".join(html.unescape(re.sub(r"<[^>]+>", "", c)).split()))
             for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def dead_letters_of_every_source(settings):
    """A message of events.ingest that is not JSON (rejected by the worker's ingest stage), and the dead letters
    the HTTP API and an import write, through the same encoder they use."""
    from stream import kafka
    from stream.events import deadletter
    from stream.events.normalize import Reason, Rejected
    now = int(time.time() * 1000)

    async def go():
        p = kafka.producer(settings.kafka)
        await p.start()
        try:
            http = deadletter.encode(Rejected(Reason.MISSING_ID, "user_id", "needs a user_id or a device_id"),
                                     "http:/2/httpapi", -1, 3, now, None,
                                     b'{"event_type":"Play","api_key":"secret-key-1"}', now, 1 << 20)
            row = deadletter.encode(Rejected(Reason.BAD_CSV_ROW, None, "3 columns, the header has 5"),
                                    "s3://src-bucket/in/b.csv", deadletter.FILE_ROW, 12, now, None, b"a,b,c", now,
                                    1 << 20)
            for value in (http, row):
                await (await p.send(settings.topics.name("dead_letter"), value))
            await (await p.send(settings.topics.name("ingest"), b'{"event_type": "Play", broken', partition=0))
        finally:
            await kafka.stop_all(p)
    asyncio.run(go())


def test_every_console_post_route_needs_a_session_and_its_csrf_token(deployment, worker):
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    console_up(settings)
    status, headers, _ = http_request(settings, "GET", "/console/")
    assert (status, headers["Location"]) == (303, "/console/login")
    status, _, body = http_request(settings, "POST", "/console/login", {"token": "wrong"})
    assert status == 401 and "that is not the admin token" in body
    status, headers, _ = http_request(settings, "POST", "/console/login", {"token": ADMIN_TOKEN})
    assert (status, headers["Location"]) == (303, "/console/")
    set_cookie = headers["Set-Cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/console"} <= {p.strip() for p in set_cookie.split(";")}
    cookie = set_cookie.split(";")[0]
    status, _, page = http_request(settings, "GET", "/console/", cookie=cookie)
    assert status == 200 and "Destinations" in page and "main" in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)

    posts = ["/console/logout", "/console/destinations/main/enable", "/console/destinations/main/disable",
             "/console/destinations/main/verify", "/console/backfills", "/console/backfills/bf-none/cancel",
             "/console/imports/none/retry", "/console/cohorts/none/sync", "/console/cohorts/none/members"]
    from stream.admin.console import POST_ROUTES
    assert len(posts) == len(POST_ROUTES)
    for path in posts:
        assert http_request(settings, "POST", path, {}, cookie)[0] == 403, path
        assert http_request(settings, "POST", path, {"csrf": "0" * 64}, cookie)[0] == 403, path
        status, headers, _ = http_request(settings, "POST", path, {"csrf": csrf})     # no session
        assert (status, headers["Location"]) == (303, "/console/login"), path
    # nothing was done meanwhile: main is still on
    assert next(d for d in call(settings, "GET", "/admin/status")[1]["destinations"]
                if d["destination"] == "main")["enabled"] is True
    # with the token, an action runs; its refusal is shown on the page with its status
    status, _, page = http_request(settings, "POST", "/console/backfills/bf-none/cancel", {"csrf": csrf}, cookie)
    assert status == 404 and "no backfill &#39;bf-none&#39; in the ledger" in page
    status, _, page = http_request(settings, "GET", "/console/destinations/nope/history", cookie=cookie)
    assert status == 404 and "no destination &#39;nope&#39; in the settings" in page
    # a forged or tampered session is no session
    issued, nonce, sig = cookie.split("=", 1)[1].split(".")
    for forged in (f"{issued}.{nonce}.{'0' * 64}", f"{int(issued) + 1}.{nonce}.{sig}", "x"):
        assert http_request(settings, "GET", "/console/", cookie=f"stream_console={forged}")[0] == 303
    # the console's pages are not a way around the admin API's token
    assert http_request(settings, "GET", "/console/../admin/status", cookie=cookie)[0] in (401, 404)
    assert call(settings, "GET", "/admin/status", token="wrong")[0] == 401
    # the dead letters of every source, as the page shows them
    dead_letters_of_every_source(settings)
    status, _, page = wait_until(lambda: (r := http_request(settings, "GET", "/console/deadletters?hours=24",
                                                              cookie=cookie)) and "3 rejected" in r[2] and r, 60,
                                 "the three dead letters")
    assert status == 200 and "3 rejected in the latest 24 hours." in page
    ingest = f"{settings.topics.name('ingest')}[0]@0"
    malformed = "the message is not valid JSON: JSON is malformed: object keys must be strings (byte 23)"
    assert table_rows(page, "by-reason") == [
        ["bad_csv_row", "1", "s3://src-bucket/in/b.csv (1)", "T", "T",
         "s3://src-bucket/in/b.csv#12: 3 columns, the header has 5"],
        ["malformed_json", "1", f"{settings.topics.name('ingest')} (1)", "T", "T", f"{ingest}: {malformed}"],
        ["missing_id", "1", "http:/2/httpapi (1)", "T", "T",
         "http:/2/httpapi event 3 user_id: needs a user_id or a device_id"]]
    assert table_rows(page, "samples") == [                  # latest first; the API key stays redacted
        ["T", "malformed_json", ingest, malformed, '{"event_type": "Play", broken'],
        ["T", "bad_csv_row", "s3://src-bucket/in/b.csv#12", "3 columns, the header has 5", "a,b,c"],
        ["T", "missing_id (user_id)", "http:/2/httpapi event 3", "needs a user_id or a device_id",
         '{"event_type":"Play","api_key":"[redacted]"}']]
    # logging out ends the session
    status, headers, _ = http_request(settings, "POST", "/console/logout", {"csrf": csrf}, cookie)
    assert (status, headers["Location"]) == (303, "/console/login")
    assert http_request(settings, "GET", "/console/", cookie=cookie)[0] == 303


def test_sign_in_turn_a_destination_off_and_on_and_copy_its_policy(deployment, worker, driver, tmp_path):
    from selenium.webdriver.common.by import By
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    console_up(settings)
    url = base(settings)

    driver.get(f"{url}/")                                          # not signed in: the login form
    assert driver.current_url == f"{url}/login"
    sign_in(driver, settings, "not-the-token")
    assert driver.find_element(By.ID, "login-error").text == "that is not the admin token"
    driver.save_screenshot(str(tmp_path / "login-refused.png"))
    sign_in(driver, settings)
    assert driver.current_url == f"{url}/"
    assert [a.text for a in driver.find_elements(By.CSS_SELECTOR, "nav a")] == [
        "Destinations", "Backfills", "Imports", "Dead letters", "Cohorts"]

    first, rest = EVENTS[:20], EVENTS[20:]
    asyncio.run(produce(settings, first))
    wait_until(lambda: exported(settings, "main") == 20, 90, "the first hour exported")

    def grid_of_48():
        # the clock seals the empty hours of the last two days a moment after the first hour is exported
        driver.refresh()
        section = driver.find_element(By.ID, "dest-main")
        cells = section.find_elements(By.CSS_SELECTOR, ".grid .cell")
        return (section, cells) if len(cells) == 48 else None

    section, cells = wait_until(grid_of_48, 60, "the console's grid to show the latest 48 hours")
    assert section.find_element(By.CSS_SELECTOR, "[data-enabled]").text == "enabled"
    assert section.find_element(By.CSS_SELECTOR, "h2 [data-state]").text == "state: ok"
    for cell in cells[:3]:                      # the state is written, not only coloured
        assert cell.get_attribute("data-state") in ("open", "sealed", "error")
        assert cell.find_element(By.CSS_SELECTOR, ".state").text.split()[0] == \
            cell.get_attribute("data-state").upper()
    driver.save_screenshot(str(tmp_path / "destinations.png"))

    submit(driver, driver.find_element(By.ID, "disable-main"))
    section = driver.find_element(By.ID, "dest-main")
    assert "main: exports disabled (main)" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    assert section.find_element(By.CSS_SELECTOR, "[data-enabled]").text == "disabled"
    assert section.find_elements(By.CSS_SELECTOR, "h2 [data-state]") == []       # no "state: ok" any more
    assert driver.find_element(By.ID, "enable-main").text == "Enable"
    driver.save_screenshot(str(tmp_path / "disabled.png"))
    assert next(d for d in call(settings, "GET", "/admin/status")[1]["destinations"]
                if d["destination"] == "main")["state"] == "disabled"
    asyncio.run(produce(settings, rest))
    time.sleep(4)
    assert exported(settings, "main") == 20                          # the export stopped

    submit(driver, driver.find_element(By.ID, "enable-main"))
    assert "main: exports enabled (main)" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    assert driver.find_element(By.CSS_SELECTOR, "#dest-main [data-enabled]").text == "enabled"
    assert driver.find_element(By.ID, "disable-main").text == "Disable"
    wait_until(lambda: exported(settings, "main") == 60, 90, "main to catch up")   # and resumed

    submit(driver, driver.find_element(By.ID, "verify-main"))
    assert driver.find_element(By.ID, "verify-result").text == "Passed: every step succeeded."
    assert "amp/424242/424242_" in text(driver)

    driver.get(f"{url}/destinations/main/history?hours=1000")
    row = driver.find_element(By.XPATH, '//tr[th[text()="2024-03-09T07:00:00Z"]]').text
    hour, job, status, objects, events = row.split()[:5]
    assert (hour, job, status, objects, events) == ("2024-03-09T07:00:00Z", "live", "complete", "2", "20"), row
    driver.save_screenshot(str(tmp_path / "history.png"))

    driver.get(f"{url}/destinations/main/policy")
    bucket = settings.destinations[0].bucket
    doc = json.loads(driver.find_element(By.ID, "bucket_policy").text)
    assert doc["Statement"][0]["Sid"] == "StreamWrites"
    assert doc["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}/amp/424242/424242_*"]
    copy = driver.find_element(By.CSS_SELECTOR, 'button.copy[data-copy="bucket_policy"]')
    assert copy.is_displayed() and copy.text == "Copy"
    copy.click()
    wait_for(driver, lambda d: copy.text in ("Copied", "Copy failed: select the text"), 5, "the copy button")
    driver.find_element(By.ID, "enforce_encryption").click()
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.inline button"))
    doc = json.loads(driver.find_element(By.ID, "bucket_policy").text)
    assert [s["Sid"] for s in doc["Statement"]] == ["StreamWrites", "StreamRebuilds", "StreamLists",
                                                     "DenyOtherEncryption", "DenyUnencrypted"]
    driver.save_screenshot(str(tmp_path / "policy.png"))
    driver.set_window_size(375, 800)
    driver.save_screenshot(str(tmp_path / "policy-375.png"))

    for page, words in (("/deadletters", "0 rejected in the latest 24 hours."),
                        ("/imports", "No import sources in the settings."),
                        ("/cohorts", "No cohorts in the settings (cohorts).")):
        driver.get(url + page)
        assert words in text(driver), page
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.logout button"))
    assert driver.current_url == f"{url}/login"
    driver.get(f"{url}/backfills")
    assert driver.current_url == f"{url}/login"


def test_a_backfill_started_from_the_form_shows_its_progress_until_done(deployment, worker, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    settings = exported_with_hourly_backfills(deployment, worker)
    console_up(settings)
    sign_in(driver, settings)

    driver.get(f"{base(settings)}/backfills")
    assert "No backfills in the ledger." in text(driver)
    Select(driver.find_element(By.ID, "bf-destination")).select_by_visible_text("main")
    driver.find_element(By.ID, "bf-from").send_keys("2024-03-09T07")
    driver.find_element(By.ID, "bf-to").send_keys("nonsense")
    submit(driver, driver.find_element(By.ID, "bf-start"))
    assert driver.find_element(By.ID, "backfill-error").text == \
        "400: 'nonsense' is not an hour: write it as 2024-03-01T07 (UTC)"
    assert driver.find_element(By.ID, "bf-from").get_attribute("value") == "2024-03-09T07"   # the form is kept
    to = driver.find_element(By.ID, "bf-to")
    to.clear()
    to.send_keys("2024-03-09T10")
    submit(driver, driver.find_element(By.ID, "bf-start"))
    flash = driver.find_element(By.CSS_SELECTOR, ".flash").text
    job = re.match(r"backfill (bf-\S+) started: main, 2024-03-09T07 to 2024-03-09T10, 3 hours", flash).group(1)
    driver.save_screenshot(str(tmp_path / "backfill-started.png"))

    # while it runs, its progress is refreshed in place: a form being filled in is left as it is
    driver.execute_script("window.notReloaded = true;")
    driver.find_element(By.ID, "bf-from").send_keys("2024-03-09T00")
    Select(driver.find_element(By.ID, "bf-source")).select_by_visible_text("archive")
    seen = set()

    def row_state(d):
        rows = d.find_elements(By.ID, f"job-{job}")
        if rows:
            seen.add(rows[0].get_attribute("data-state"))
        return rows and rows[0].get_attribute("data-state") == "done" and rows[0].text
    row = wait_for(driver, row_state, 120, "the backfill to be done")
    assert "3/3 hours" in row and "done" in row and "60" in row
    assert "running" in seen
    assert driver.execute_script("return window.notReloaded === true") is True
    assert driver.find_element(By.ID, "bf-from").get_attribute("value") == "2024-03-09T00"
    assert Select(driver.find_element(By.ID, "bf-source")).first_selected_option.text == "archive"
    assert driver.find_element(By.ID, "jobs").get_attribute("data-refresh") is None     # done: no more refreshes
    assert driver.find_elements(By.CSS_SELECTOR, f"#job-{job} form") == []    # nothing to cancel any more
    driver.save_screenshot(str(tmp_path / "backfill-done.png"))
    assert call(settings, "GET", f"/admin/backfills/{job}")[1]["state"] == "done"


def test_the_imports_page_shows_a_failed_file_retries_it_and_previews_a_file(deployment, worker, driver, tmp_path):
    import gzip

    import boto3
    from selenium.webdriver.common.by import By

    from tests.integration.test_import import csv_bytes, discover, jsonl, ops, put, record, rows, source_deployment
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    settings = source_deployment(path, src_bucket)
    asyncio.run(ensure_topics(settings))
    cut = gzip.compress(jsonl(rows("d", 50)))
    put(settings, src_bucket, {"in/b.csv": csv_bytes(rows("b", 3, 100), broken_row=0),
                               "in/d.json.gz": cut[: len(cut) - 20]})
    asyncio.run(discover(settings, [record(src_bucket, "in/b.csv"), record(src_bucket, "in/d.json.gz")]))
    worker()
    wait_until(lambda: asyncio.run(ops.status(settings))[0]["files"]["failed"] == 1, 90, "the files imported")
    console_up(settings)
    sign_in(driver, settings)
    driver.get(f"{base(settings)}/imports")
    section = driver.find_element(By.ID, "source-clicks").text
    assert "discovered\n2" in section and "done\n1" in section and "failed\n1" in section
    assert "failed (truncated_gzip): 1" in section and "in/d.json.gz" in section
    driver.save_screenshot(str(tmp_path / "imports.png"))

    # retry the failed file: fixed first, then queued again through the button
    put(settings, src_bucket, {"in/d.json.gz": gzip.compress(jsonl(rows("d", 50)))})
    submit(driver, driver.find_element(By.CSS_SELECTOR, "button[aria-label='Retry in/d.json.gz']"))
    assert "in/d.json.gz" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    wait_until(lambda: asyncio.run(ops.status(settings))[0]["files"] == {
        "discovered": 2, "waiting": 0, "done": 2, "failed": 0}, 60, "the retried file done")
    driver.get(f"{base(settings)}/imports")
    assert "failed\n0" in driver.find_element(By.ID, "source-clicks").text

    # preview the CSV: its rows next to the events, and the broken row's error
    driver.find_element(By.ID, "pv-key").send_keys("in/b.csv")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.grid-form button[type=submit]"))
    table = driver.find_element(By.ID, "preview").text
    assert '"event_type": "Play"' in table and '"user_id": "user-0001"' in table
    assert "bad_csv_row" in table
    driver.save_screenshot(str(tmp_path / "preview.png"))


def test_a_logout_ends_the_session_on_every_worker_and_the_cookies_are_secure_behind_a_trusted_proxy(
        deployment, worker):
    import yaml

    from stream.devstack.services import free_port
    from stream.settings import load_settings
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["admin"]["trusted_proxies"] = ["127.0.0.1"]       # the ingress in front of the workers
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    other = free_port()
    worker()
    worker(http_port=other)
    console_up(settings)
    console_up(settings, other)
    https = {"X-Forwarded-Proto": "https"}

    got = []
    status, _, _ = http_request(settings, "POST", "/console/login", {"token": ADMIN_TOKEN}, headers=https,
                                set_cookies=got)
    (login,) = got
    cookie = login.split(";")[0]
    assert status == 303 and re.fullmatch(r"stream_console=\d+\.[\w-]+\.[0-9a-f]{64}", cookie)
    assert login == f"{cookie}; HttpOnly; Max-Age=43200; Path=/console; SameSite=Strict; Secure"
    # the flash cookie of an action, and its deletion by the page that shows it, are Secure too
    status, _, page = http_request(settings, "GET", "/console/", cookie=cookie, headers=https)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    got = []
    status, headers, _ = http_request(settings, "POST", "/console/backfills/bf-none/cancel", {"csrf": csrf},
                                      cookie, headers=https, set_cookies=got)
    assert status == 404 and got == []                    # a refusal is shown on the page, no flash
    status, headers, _ = http_request(settings, "POST", "/console/destinations/main/disable", {"csrf": csrf},
                                      cookie, headers=https, set_cookies=got)
    (flash,) = got
    assert (status, headers["Location"]) == (303, "/console/")
    assert flash == ("stream_console_flash=main%3A%20exports%20disabled%20%28main%29; HttpOnly; Path=/console; "
                     "SameSite=Strict; Secure")
    got = []
    http_request(settings, "GET", "/console/", cookie=f"{cookie}; {flash.split(';')[0]}", headers=https,
                 set_cookies=got)
    assert got == ['stream_console_flash=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Max-Age=0; '
                   "Path=/console; SameSite=Strict; Secure"]
    # not through the proxy's https: not Secure
    got = []
    http_request(settings, "POST", "/console/login", {"token": ADMIN_TOKEN}, set_cookies=got)
    assert got[0] == f"{got[0].split(';')[0]}; HttpOnly; Max-Age=43200; Path=/console; SameSite=Strict"

    # the session works on the other worker; logged out on the first, it ends on both
    assert http_request(settings, "GET", "/console/", cookie=cookie, port=other)[0] == 200
    status, headers, _ = http_request(settings, "POST", "/console/logout", {"csrf": csrf}, cookie, headers=https)
    assert (status, headers["Location"]) == (303, "/console/login")
    assert http_request(settings, "GET", "/console/", cookie=cookie)[0] == 303
    wait_until(lambda: http_request(settings, "GET", "/console/", cookie=cookie, port=other)[0] == 303, 20,
               "the other worker to refuse the logged-out session")
    status, headers, _ = http_request(settings, "GET", "/console/backfills", cookie=cookie, port=other)
    assert (status, headers["Location"]) == (303, "/console/login")
    # a worker started afterwards reads the logout before it lets any session in
    third = free_port()
    worker(http_port=third)

    def third_answer():
        try:
            status = http_request(settings, "GET", "/console/", cookie=cookie, port=third)[0]
        except OSError:
            return None
        return status if status != 503 else None     # 503: still reading the logged-out sessions
    assert wait_until(third_answer, 60, "the third worker's console") == 303
