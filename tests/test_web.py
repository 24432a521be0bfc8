"""End-to-end tests of the web page in headless Chromium.

Each test starts the real server (``tornado_app.py``, one rank, a temporary
state folder, a free 127.0.0.1 port) and drives Debian's ``/usr/bin/chromium``
with Playwright. A screenshot of each state goes to ``artifacts/web/``.

Chromium is optional on a developer machine: without it the tests skip, unless
``KVIS_REQUIRE_ALL=1`` (set by CI), where they fail. Install it with
``apt-get install -y chromium``. Never ``playwright install``: it downloads a
browser, which offline clusters cannot do.
"""

from __future__ import annotations

import base64
import io
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest

from local_server import REPO, Server, start_server

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow]

CAVITY_VTK = REPO / "datasets" / "cavity" / "VTK"
CAVITY_STEPS = 11
SCREENSHOTS = REPO / "artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
H264_TYPE = 'video/mp4; codecs="avc1.42E01E"'
RENDER_TIMEOUT_MS = 240_000
FPS = 10


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when KVIS_REQUIRE_ALL=1 requires every optional tool."""
    if os.environ.get("KVIS_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (KVIS_REQUIRE_ALL=1 turns this skip into a failure)")
    pytest.skip(reason)


# ------------------------------------------------------------------ server


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} not found; install it with: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is missing; install it with: pip install playwright")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class PageSession:
    """A page plus the uncaught JavaScript errors seen while it ran."""

    page: object
    js_errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def session(browser) -> Iterator[PageSession]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    result = PageSession(page)
    page.on("pageerror", lambda error: result.js_errors.append(str(error)))
    yield result
    context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("web") / "state")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cavity_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cavity sample packed like ``tar -czf VTK.tar.gz VTK`` on a login node."""
    path = tmp_path_factory.mktemp("archives") / "VTK.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(CAVITY_VTK, arcname="VTK")
    return path


# ------------------------------------------------------------------ page steps


def upload(page, archive: Path) -> None:
    """Choose the archive in the page's file input and wait for the summary."""
    page.set_input_files("#file-input", str(archive))
    page.wait_for_selector("#summary-section:not([hidden])", timeout=120_000)


def field_label(page, name: str) -> str:
    labels = page.locator("#field-select option").all_text_contents()
    matches = [label for label in labels if label.startswith(f"{name} (")]
    assert matches, f"field {name!r} not offered; options are {labels}"
    return matches[0]


def record_texts(page, element_id: str) -> None:
    """Keep every text an element shows in ``window.kvisTexts[element_id]``, to check after the fact."""
    page.evaluate(
        """(id) => {
            window.kvisTexts = window.kvisTexts || {};
            const texts = window.kvisTexts[id] = [];
            const target = document.getElementById(id);
            new MutationObserver(() => texts.push(target.textContent))
                .observe(target, {childList: true, characterData: true, subtree: true});
        }""",
        element_id,
    )


def recorded_texts(page, element_id: str) -> list[str]:
    return page.evaluate("(id) => window.kvisTexts[id]", element_id)


def drop_file(page, name: str, data: bytes) -> None:
    """Drop a file on the drop zone, as a user dragging it from a file manager would."""
    page.evaluate(
        """([name, base64]) => {
            const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "application/gzip"}));
            const zone = document.getElementById("drop-zone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }
        }""",
        [name, base64.b64encode(data).decode()],
    )


def render(page, field_name: str, colormap: str = "viridis") -> None:
    page.select_option("#field-select", label=field_label(page, field_name))
    page.select_option("#colormap-select", colormap)
    page.select_option("#size-select", "160x120")
    page.fill("#fps-input", str(FPS))
    page.click("#render-button")


def wait_for_movie(page, server: Server, field_name: str) -> None:
    page.wait_for_function(
        """(field) => {
            const area = document.getElementById("movie-area");
            const error = document.getElementById("job-error");
            const title = document.getElementById("job-title").textContent;
            return title.includes(`: ${field} `) && (!area.hidden || !error.hidden);
        }""",
        arg=field_name,
        timeout=RENDER_TIMEOUT_MS,
    )
    error = page.locator("#job-error")
    assert error.is_hidden(), f"render failed on the page: {error.text_content()}\n{server.log_tail()}"


def count_frames(url: str) -> tuple[int, int, int]:
    with urllib.request.urlopen(url, timeout=60) as reply:
        data = reply.read()
    frames = 0
    width = height = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            frames += 1
            width, height = frame.width, frame.height
    return frames, width, height


def check_movie(page) -> str:
    """Check the <video>, download link and poster of the finished job, and return the movie URL.

    Playback is checked only when this Chromium can decode H.264 (see ``skip_without_h264``).
    """
    src = page.eval_on_selector("#movie", "video => video.src")
    assert re.search(r"/jobs/[^/]+/movie\.mp4$", src), f"video src is {src!r}"
    assert page.get_attribute("#download-link", "href") == page.eval_on_selector("#movie", "v => v.getAttribute('src')")
    assert page.get_attribute("#download-link", "download").endswith(".mp4")

    # The server's copy decodes to one frame per time step, whatever the browser can play.
    assert count_frames(src) == (CAVITY_STEPS, 160, 120)

    page.wait_for_function(
        "() => { const img = document.getElementById('poster'); return img.complete && img.naturalWidth > 0; }"
    )
    assert page.eval_on_selector("#poster", "img => img.naturalWidth") == 160

    if can_play_h264(page):
        check_playback(page)
    return src


def can_play_h264(page) -> bool:
    return page.evaluate(f"() => document.createElement('video').canPlayType('{H264_TYPE}')") != ""


def skip_without_h264(page) -> None:
    """Skip at the end of a test whose playback checks this browser cannot run.

    NOTE: a Chromium build without the H.264 decoder cannot play, time or seek the movie.
    The other checks still ran: the video's src is the movie URL and the served movie
    decodes with PyAV to one frame per time step.
    """
    if not can_play_h264(page):
        pytest.skip(f"this Chromium cannot play {H264_TYPE}; playback, duration and seeking were not checked")


def check_playback(page) -> None:
    """Play the movie in the browser, check its duration, seek, and look at a decoded frame."""
    page.wait_for_function("() => document.getElementById('movie').readyState >= 1")
    duration = page.eval_on_selector("#movie", "video => video.duration")
    assert duration == pytest.approx(CAVITY_STEPS / FPS, abs=0.5 / FPS)

    # Muted, so that the autoplay policy lets play() start without a user gesture.
    page.evaluate("() => { const v = document.getElementById('movie'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => { const v = document.getElementById('movie'); return v.currentTime > 0 || v.ended; }")

    seek_target = 0.55
    reached = page.evaluate(
        """(target) => new Promise((resolve) => {
            const video = document.getElementById("movie");
            video.pause();
            video.addEventListener("seeked", () => resolve(video.currentTime), {once: true});
            video.currentTime = target;
        })""",
        seek_target,
    )
    assert reached == pytest.approx(seek_target, abs=1.0 / FPS)

    # A decoded frame is drawn in the background colour at least, never all black.
    mean_brightness = page.evaluate(
        """() => {
            const video = document.getElementById("movie");
            const canvas = document.createElement("canvas");
            canvas.width = video.videoWidth;
            canvas.height = video.videoHeight;
            const context = canvas.getContext("2d");
            context.drawImage(video, 0, 0);
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let sum = 0;
            for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
            return sum / (pixels.length / 4) / 3;
        }"""
    )
    assert mean_brightness > 20
    assert page.eval_on_selector("#movie", "video => video.error") is None


# ------------------------------------------------------------------ tests


def test_page_view_labels_match_direction(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state")
    try:
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as reply:
            page = reply.read().decode()
    finally:
        server.stop()
    options = dict(re.findall(r'<option value="([+-][xyz])">([^<]*)</option>', page))
    assert options["+x"] == "looking along +x"
    assert options["-z"] == "looking along −z"
    assert len(options) == 6


def test_page_upload_render_and_rerender(session: PageSession, server: Server, cavity_archive: Path) -> None:
    page = session.page
    page.goto(f"{server.url}/")
    page.wait_for_selector("#jobs-empty:not([hidden])")
    session.screenshot("01-start")

    # Upload: a progress bar while it is sent, then the summary and the form's choices from the archive.
    record_texts(page, "upload-progress-text")
    upload(page, cavity_archive)
    upload_texts = recorded_texts(page, "upload-progress-text")
    assert any("the server is reading the archive" in text for text in upload_texts), upload_texts
    summary = page.locator("#summary-list").inner_text()
    assert re.search(r"Time steps\s+11\b", summary), summary
    assert "movingWall" in summary
    assert page.locator("#upload-progress").get_attribute("value") == "100"
    field_label(page, "p")
    field_label(page, "U")
    parts = page.locator("#parts-list input").evaluate_all("boxes => boxes.map(box => box.value)")
    assert set(parts) == {"internal", "fixedWalls", "movingWall"}
    session.screenshot("02-summary")

    # First render: progress is shown while it runs, then the movie.
    record_texts(page, "job-progress-text")
    render(page, "p")
    page.wait_for_selector("#job-section:not([hidden])")
    session.screenshot("03-rendering")
    wait_for_movie(page, server, "p")

    texts = recorded_texts(page, "job-progress-text")
    assert any(re.match(r"(Waiting|Reading|Rendering)", text) for text in texts), texts
    assert page.locator("#job-progress-text").text_content().startswith(f"Done: {CAVITY_STEPS} frames")
    assert page.locator("#job-progress").get_attribute("value") == str(CAVITY_STEPS)
    assert page.locator("#cancel-button").is_disabled()
    first_movie = check_movie(page)
    session.screenshot("04-movie")

    # Second render from the same upload with another field and colormap, without uploading again.
    render(page, "U", colormap="plasma")
    wait_for_movie(page, server, "U")
    second_movie = check_movie(page)
    assert second_movie != first_movie

    # Both jobs are listed as done, each with a movie to play.
    page.click("#jobs-refresh")
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length >= 2")
    rows = page.locator("#jobs-table tbody tr")
    statuses = rows.evaluate_all("rows => rows.map(row => row.cells[2].textContent)")
    assert statuses.count("done") >= 2, statuses
    assert page.locator("#jobs-table tbody button", has_text="Play").count() >= 2
    session.screenshot("05-second-movie")

    assert session.js_errors == []
    skip_without_h264(page)


def test_page_bad_archive_shows_error(session: PageSession, server: Server, cavity_archive: Path) -> None:
    page = session.page
    page.goto(f"{server.url}/")
    drop_file(page, "bad.tar.gz", b"not a tar.gz\n" * 64)
    error = page.locator("#upload-error")
    error.wait_for(state="visible", timeout=60_000)
    assert error.text_content().startswith("Uploading bad.tar.gz failed: ")
    assert page.locator("#summary-section").is_hidden()
    session.screenshot("06-bad-archive")

    # The page stays usable: the good archive uploads next and the error goes away.
    assert page.locator("#file-input").is_enabled()
    upload(page, cavity_archive)
    assert error.is_hidden()
    assert session.js_errors == []


def test_page_shows_render_errors(session: PageSession, server: Server, cavity_archive: Path) -> None:
    page = session.page
    page.goto(f"{server.url}/")
    upload(page, cavity_archive)
    page.select_option("#size-select", "160x120")

    # The server's own 400 for a field the upload lacks: the request is rewritten on its way out.
    def ask_for_missing_field(route) -> None:
        route.continue_(url=re.sub(r"field=[^&]*", "field=no_such_field", route.request.url))

    page.route(re.compile(r".*/jobs\?.*"), ask_for_missing_field)
    page.click("#render-button")
    # The server rejects the field at once (400) or the renderer fails the job, depending on
    # whether the server checks fields against the upload's summary.
    page.wait_for_function(
        """() => ["render-error", "job-error"].some((id) => {
            const element = document.getElementById(id);
            return !element.hidden && element.textContent.includes("no_such_field");
        })""",
        timeout=RENDER_TIMEOUT_MS,
    )
    page.unroute(re.compile(r".*/jobs\?.*"))
    session.screenshot("07-unknown-field")

    # NOTE: a full queue is simulated in the browser, because filling the real queue takes
    # several renders. The check is that the page turns the 503 and its Retry-After into words.
    page.route(
        re.compile(r".*/jobs\?.*"),
        lambda route: route.fulfill(status=503, headers={"Retry-After": "30"}, content_type="text/plain",
                                    body="render queue is full (8 jobs waiting)"),
    )
    page.click("#render-button")
    page.wait_for_function("() => document.getElementById('render-error').textContent.includes('queue is full')")
    assert "Try again in 30 s" in page.locator("#render-error").text_content()
    assert page.locator("#render-button").is_enabled()
    session.screenshot("08-queue-full")
    assert session.js_errors == []


def test_page_cancels_job(session: PageSession, tmp_path: Path, cavity_archive: Path) -> None:
    # A launcher that only sleeps keeps the job running until it is cancelled, whatever the machine's speed.
    sleeper = start_server(tmp_path / "state", "--launcher", '{python} -c "import time; time.sleep(120)"')
    page = session.page
    try:
        page.goto(f"{sleeper.url}/")
        upload(page, cavity_archive)
        render(page, "p")
        page.wait_for_function("() => document.getElementById('job-progress-text').textContent.startsWith('Reading')")
        page.click("#cancel-button")

        page.wait_for_function(
            "() => document.getElementById('job-progress-text').textContent.startsWith('Cancelled')"
        )
        assert page.locator("#cancel-button").is_disabled()
        assert page.locator("#movie-area").is_hidden()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#jobs-table .status')].some((cell) => cell.textContent === 'cancelled')"
        )
        session.screenshot("12-cancelled")
    finally:
        sleeper.stop()
    assert session.js_errors == []


def test_page_reports_expired_upload(session: PageSession, tmp_path: Path, cavity_archive: Path) -> None:
    forgetful = start_server(tmp_path / "state", "--retention", "1s", "--cleanup-interval", "0.2s")
    page = session.page
    try:
        page.goto(f"{forgetful.url}/")
        upload(page, cavity_archive)
        time.sleep(2.5)  # retention plus several cleanup intervals
        render(page, "p")

        error = page.locator("#render-error")
        error.wait_for(state="visible")
        assert "expired" in error.text_content()
        assert page.locator("#render-button").is_enabled()
        session.screenshot("13-expired-upload")
    finally:
        forgetful.stop()
    assert session.js_errors == []


def test_page_reports_upload_too_large(session: PageSession, tmp_path: Path, cavity_archive: Path) -> None:
    small = start_server(tmp_path / "state", "--max-upload", "64K")
    page = session.page
    try:
        page.goto(f"{small.url}/")
        page.set_input_files("#file-input", str(cavity_archive))
        error = page.locator("#upload-error")
        error.wait_for(state="visible")
        assert "larger than this server accepts" in error.text_content()
        assert page.locator("#file-input").is_enabled()
        session.screenshot("14-too-large")
    finally:
        small.stop()
    assert session.js_errors == []


def test_page_reports_server_down(session: PageSession, tmp_path: Path, cavity_archive: Path) -> None:
    doomed = start_server(tmp_path / "state")
    page = session.page
    try:
        page.goto(f"{doomed.url}/")
        page.wait_for_selector("#jobs-empty:not([hidden])")
    finally:
        doomed.stop()

    page.set_input_files("#file-input", str(cavity_archive))
    error = page.locator("#upload-error")
    error.wait_for(state="visible")
    assert error.text_content().startswith("Cannot reach the kvis server at ")
    assert page.locator("#file-input").is_enabled()
    session.screenshot("09-server-down")
    assert session.js_errors == []


def test_page_asks_for_token(session: PageSession, tmp_path: Path, cavity_archive: Path) -> None:
    token = "s3cret-token"
    guarded = start_server(tmp_path / "state", "--token", token)
    page = session.page
    try:
        page.goto(f"{guarded.url}/")

        # The first request that needs the token is rejected with 401, so the page shows the
        # token form and repeats the upload once a token is entered.
        page.set_input_files("#file-input", str(cavity_archive))
        page.wait_for_selector("#token-section:not([hidden])")
        assert page.get_attribute("#token-input", "type") == "password"
        session.screenshot("10-token")

        # A wrong token is rejected and asked for again.
        page.fill("#token-input", "wrong")
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#token-section:not([hidden])")
        assert "rejected" in page.locator("#token-message").text_content()

        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#token-section", state="hidden")
        assert page.evaluate("() => sessionStorage.getItem('kvis.token')") == token

        # The upload went through with the token. The movie arrives as a blob that the page fetched itself.
        page.wait_for_selector("#summary-section:not([hidden])", timeout=120_000)
        render(page, "p")
        wait_for_movie(page, guarded, "p")
        assert page.eval_on_selector("#movie", "video => video.src").startswith("blob:")
        if can_play_h264(page):
            check_playback(page)
        session.screenshot("11-token-movie")
    finally:
        guarded.stop()
    assert session.js_errors == []
