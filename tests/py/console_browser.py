#!/usr/bin/env python3
"""A person at the approval console, played by headless Chromium through
Selenium (tests/tests/console_browser.rs runs this).

Signs in with the approver token from $TG_CONSOLE_TOKEN (kept out of the
command line, where `ps` would show it), waits for the pending approval
--approval to appear, reads what its card says, types --reason and clicks
approve or deny, and waits for the page to confirm. Screenshots go to
--shots as <--name>-<step>.png. Prints one JSON object on stdout: the card's
fields, the notice shown, and the browser's console errors (a page blocked
by its own Content-Security-Policy says so there).

Chromium never resolves a name and never reaches past loopback: the flags
below switch off its background traffic and map every host name to
nothing.
"""

import argparse
import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

FIELDS = ["action", "workload", "request", "resource", "task_purpose", "task_id",
          "message", "policy_ids", "body_sha256", "id", "waited"]


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("TG_CHROMIUM", "/usr/bin/chromium")
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1100",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("TG_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--console", required=True, help="http://127.0.0.1:PORT/console")
    parser.add_argument("--approval", required=True)
    parser.add_argument("--verb", choices=["approve", "deny"], required=True)
    parser.add_argument("--reason", default="")
    parser.add_argument("--shots", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    token = os.environ["TG_CONSOLE_TOKEN"]
    os.makedirs(args.shots, exist_ok=True)
    # Only this run's pictures under this name: an old failure's would mislead.
    for old in os.listdir(args.shots):
        if old.startswith(f"{args.name}-") and old.endswith(".png"):
            os.remove(os.path.join(args.shots, old))

    def shot(step):
        driver.save_screenshot(os.path.join(args.shots, f"{args.name}-{step}.png"))

    result = {}
    with tempfile.TemporaryDirectory(prefix="tollgate-chromium-") as profile:
        driver = browser(profile)
        try:
            wait = WebDriverWait(driver, 20)
            driver.get(args.console)
            # Not signed in: the page sends the browser to the form.
            wait.until(ec.presence_of_element_located((By.ID, "token")))
            result["login_url"] = driver.current_url
            shot("1-login")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "signin").click()
            wait.until(lambda d: d.find_element(By.ID, "approver").text.strip() != "")
            result["approver"] = driver.find_element(By.ID, "approver").text
            wait.until(lambda d: d.find_element(By.ID, "live").text == "live")

            selector = f'article.approval[data-approval-id="{args.approval}"]'
            card = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, selector)))
            result["card"] = {
                name: card.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text
                for name in FIELDS
            }
            shot("2-pending")

            card.find_element(By.NAME, "reason").send_keys(args.reason)
            card.find_element(By.CSS_SELECTOR, f"button.{args.verb}").click()
            notice = wait.until(ec.visibility_of_element_located((By.ID, "notice")))
            wait.until(lambda d: d.find_element(By.ID, "notice").text.strip() != "")
            result["notice"] = notice.text
            # Decided: the card leaves the pending list.
            wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, selector)))
            result["pending_after"] = driver.find_element(By.ID, "pending-count").text
            shot("3-decided")
        except TimeoutException as e:
            shot("timeout")
            result["error"] = f"timed out: {e.msg or 'waiting for the page'}"
        finally:
            result["console_errors"] = [
                entry["message"] for entry in driver.get_log("browser")
                if entry.get("level") == "SEVERE"
            ]
            driver.quit()
    json.dump(result, sys.stdout)
    print()
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
