"""Every page of the smoke-built book, as a reader's browser shows it.

One headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium)
opens each HTML page of the book over a local HTTP server at a 1280 px wide window, and the
test fails on

* a JavaScript console error (level SEVERE),
* an image that did not load (``naturalWidth`` 0),
* any request to a host other than the local server (the book works offline),
* a code block or cell output whose content is wider than its box with no scrollbar, and a
  code cell that does not fit at all (its lines are at most 88 characters, which the book's
  style sheet fits into a 1280 px window).

A second test reads the built HTML: with no repository URL set (the default), no page links
to a repository, an issue tracker, Binder or Colab.

Skipped, with the reason, where chromium or chromedriver is not installed
(``apt-get install -y chromium chromium-driver``; ``.ci/run`` installs both).
``HPCAI_BROWSER_HTML=<html dir>`` points the test at a book already built.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

WIDTH, HEIGHT = 1280, 900
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
    "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
    f"--window-size={WIDTH},{HEIGHT}",
)
# Schemes that never leave the machine.
LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome-extension:", "chrome:", "devtools:")
# Code blocks and notebook outputs whose content must fit or scroll (myst-nb and
# sphinx-book-theme markup).
CODE_SELECTORS = ", ".join((
    "div.highlight", "div.highlight pre", "div.cell_input", "div.cell_output",
    "div.cell_output div.output", "div.cell_output pre", "div.output_area",
    "div.cell_output table", "div.pasted-block", "div.literal-block-wrapper",
))


def _chromium() -> str | None:
    return next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)


def _book_html(request: pytest.FixtureRequest) -> Path:
    """The html folder of the smoke-built book (``HPCAI_BROWSER_HTML`` overrides)."""
    given = os.environ.get("HPCAI_BROWSER_HTML")
    if given:
        html = Path(given)
    else:
        html = Path(request.getfixturevalue("smoke_book").html)
    assert (html / "index.html").exists(), f"no built book in {html}"
    return html


@pytest.fixture(scope="module")
def book_html(request: pytest.FixtureRequest) -> Path:
    return _book_html(request)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def server(book_html: Path) -> Iterator[str]:
    """The built book over HTTP on 127.0.0.1, a free port, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for every page; never downloads a driver or a browser."""
    chromium = _chromium()
    if chromium is None or not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip("chromium or chromedriver is not installed "
                    "(apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not go online
    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="hpcai-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _pages(html: Path) -> list[str]:
    """Every HTML page of the book, relative to the html folder (not theme assets)."""
    skip = ("_static", "_sources", "_images", "_downloads")
    return sorted(
        p.relative_to(html).as_posix() for p in html.rglob("*.html")
        if p.relative_to(html).parts[0] not in skip
    )


# Wait for the page to settle: images loaded (lazy ones made eager), fonts, MathJax.
SETTLE_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  for (const img of document.images) { img.loading = "eager"; }
  const loaded = img => img.complete ? Promise.resolve() : new Promise(
    r => { img.addEventListener("load", r, {once: true});
           img.addEventListener("error", r, {once: true}); });
  await Promise.all(Array.from(document.images, loaded));
  if (document.fonts) { await document.fonts.ready; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  done(true);
})().catch(e => done(String(e)));
"""

# Images that did not load, and code blocks / outputs whose content is clipped.
INSPECT_JS = """
const selectors = arguments[0];
const broken = Array.from(document.images)
  .filter(img => img.complete && img.naturalWidth === 0)
  .map(img => img.getAttribute("src"));
const describe = el => el.tagName.toLowerCase() + "." +
  Array.from(el.classList).join(".") + " " +
  JSON.stringify((el.innerText || "").trim().slice(0, 60));
const scrolls = v => v === "auto" || v === "scroll";
const clipped = [];
for (const el of document.querySelectorAll(selectors)) {
  if (el.offsetParent === null || el.scrollWidth <= el.clientWidth + 1) continue;
  const own = getComputedStyle(el).overflowX;
  if (scrolls(own)) continue;
  if (own === "visible") {
    // The content spills out: fine if the nearest ancestor that does not let it spill
    // scrolls, clipped if that ancestor hides it, and off the page if there is none.
    let up = el.parentElement, verdict = "spills out of the page";
    while (up && up !== document.body) {
      const o = getComputedStyle(up).overflowX;
      if (o !== "visible") { verdict = scrolls(o) ? null : "clipped by " + describe(up); break; }
      up = up.parentElement;
    }
    if (verdict === null) continue;
    clipped.push(describe(el) + ": " + el.scrollWidth + " > " + el.clientWidth + " px, " +
                 verdict);
  } else {
    clipped.push(describe(el) + ": " + el.scrollWidth + " > " + el.clientWidth +
                 " px, overflow-x " + own);
  }
}
// Code cells hold lines of at most 88 characters (tests/test_notebook_lines.py), and the
// book's style sheet (_static/page.css) makes such a line fit: no code cell needs to scroll.
for (const pre of document.querySelectorAll("div.cell_input pre")) {
  if (pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 1) {
    clipped.push("code cell needs to scroll: " + describe(pre) + ": " + pre.scrollWidth +
                 " > " + pre.clientWidth + " px");
  }
}
const root = document.documentElement;
if (root.scrollWidth > root.clientWidth + 1) {
  clipped.push("the page itself is " + root.scrollWidth + " px wide in a " +
               root.clientWidth + " px window");
}
return {broken: broken, clipped: clipped, width: window.innerWidth};
"""


def _foreign_requests(performance_log: list[dict], origin: str) -> list[str]:
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        url = message["params"]["request"]["url"]
        if not (url.startswith(origin + "/") or url == origin
                or url.startswith(LOCAL_SCHEMES)):
            urls.append(url)
    return urls


def test_every_page_in_a_browser(browser, book_html: Path, server: str) -> None:
    pages = _pages(book_html)
    assert len(pages) >= 10, pages
    browser.get_log("browser")  # drop anything from start-up
    browser.get_log("performance")
    problems: list[str] = []
    started = time.perf_counter()
    for page in pages:
        browser.get(f"{server}/{page}")
        settled = browser.execute_async_script(SETTLE_JS)
        if settled is not True:
            problems.append(f"{page}: the page did not settle: {settled}")
        found = browser.execute_script(INSPECT_JS, CODE_SELECTORS)
        if found["width"] < WIDTH - 40:
            problems.append(f"{page}: window is {found['width']} px wide, not {WIDTH}")
        problems += [f"{page}: image did not load: {src}" for src in found["broken"]]
        problems += [f"{page}: clipped: {what}" for what in found["clipped"]]
        problems += [
            f"{page}: console error: {entry['message']}"
            for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
        ]
        problems += [f"{page}: request to another host: {url}"
                     for url in _foreign_requests(browser.get_log("performance"), server)]
    elapsed = time.perf_counter() - started
    print(f"browser: {len(pages)} pages in {elapsed:.1f} s")
    assert not problems, f"{len(problems)} problems on {len(pages)} pages:\n" + "\n".join(
        problems)


# Markup that exists only when a repository URL is set (repository.url in _config.yml or
# HPCAI_REPOSITORY_URL): sphinx-book-theme's source and launch buttons and their links.
REPOSITORY_MARKUP = re.compile(
    r'btn-source-(repository|issues|edit)-button|btn-launch-|dropdown-launch-buttons|'
    r'href="[^"]*(mybinder\.org|colab\.research\.google\.com|/issues/new\?|/edit/main/)'
)


def test_no_repository_links_without_a_repository_url(book_html: Path) -> None:
    if os.environ.get("HPCAI_REPOSITORY_URL"):
        pytest.skip("HPCAI_REPOSITORY_URL is set: this build links to a repository")
    found = []
    for page in _pages(book_html):
        text = (book_html / page).read_text(errors="replace")
        found += [f"{page}: {m.group(0)[:120]}" for m in REPOSITORY_MARKUP.finditer(text)]
    assert not found, "repository-dependent links with no repository URL set:\n" + "\n".join(
        found[:40])


def _theme_options(monkeypatch: pytest.MonkeyPatch, url: str | None) -> dict:
    """The theme options of the real _config.yml after the book extension's config hook."""
    from jupyter_book.config import get_final_config

    root = Path(__file__).resolve().parent.parent
    if str(root / "_ext") not in sys.path:
        sys.path.insert(0, str(root / "_ext"))
    import hpcai_book

    if url is None:
        monkeypatch.delenv(hpcai_book.REPOSITORY_ENV, raising=False)
    else:
        monkeypatch.setenv(hpcai_book.REPOSITORY_ENV, url)
    config, *_ = get_final_config(user_yaml=root / "_config.yml",
                                  cli_config={"latex_individualpages": False},
                                  sourcedir=root, validate=False)
    return hpcai_book.apply_repository_setting(dict(config["html_theme_options"]))


def test_repository_url_unset_means_no_repository_buttons(monkeypatch) -> None:
    options = _theme_options(monkeypatch, None)
    if options.get("repository_url"):
        pytest.skip("_config.yml sets repository.url: the book has a repository")
    assert not any(options.get(b) for b in ("use_repository_button", "use_issues_button",
                                            "use_edit_page_button", "use_source_button"))
    launch = options["launch_buttons"]
    assert not any(launch.get(k) for k in ("binderhub_url", "jupyterhub_url", "colab_url",
                                           "deepnote_url", "jupyterlite_url", "thebe"))


def test_one_setting_turns_every_repository_button_on(monkeypatch) -> None:
    options = _theme_options(monkeypatch, "https://example.org/books/hpcai/")
    assert options["repository_url"] == "https://example.org/books/hpcai"
    assert all(options[b] for b in ("use_repository_button", "use_issues_button",
                                    "use_edit_page_button", "use_source_button"))
    # the launch providers of _config.yml stay, to build their links from the URL
    assert options["launch_buttons"].get("binderhub_url")
    assert options["launch_buttons"].get("colab_url")
