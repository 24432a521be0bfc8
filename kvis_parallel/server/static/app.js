// kvis web page: upload a foamToVTK archive, choose what to draw, render, watch.
//
// Plain ES module with no dependencies, served by the kvis server next to index.html.
// It uses the server's HTTP API (docs/architecture.md, "HTTP contract"):
//   POST /uploads            store an archive, returns its id and summary
//   POST /jobs?upload=ID&... start a render, 202 {id, status}
//   GET  /jobs/ID            status and progress, polled while the job runs
//   GET  /jobs/ID/movie.mp4  the movie (HTTP Range), and /jobs/ID/poster.jpg its poster frame
//   DELETE /jobs/ID          cancel
//   GET  /jobs               recent jobs
// URLs are relative so that the page also works behind a proxy that adds a path prefix.

const TOKEN_STORAGE_KEY = "kvis.token";

// Polling starts fast so short renders feel immediate, then slows down so a long
// render does not flood the server. The interval always stays within these bounds.
const POLL_INTERVAL_MIN_MS = 400;
const POLL_INTERVAL_MAX_MS = 3000;
const POLL_BACKOFF = 1.5;
// Consecutive failed polls before the page stops and reports that the server is unreachable.
const POLL_MAX_FAILURES = 5;
// While a listed job is unfinished, the recent jobs list refreshes itself at this interval.
const JOBS_REFRESH_MS = 5000;

const TERMINAL_STATUSES = new Set(["done", "failed", "cancelled"]);

const state = {
  uploadId: null,
  summary: null,
  jobId: null,          // the job shown in the "Movie" section
  retryAfterToken: [],  // actions that got 401, repeated once the user enters a token
  objectUrls: [],       // blob URLs to revoke when another movie replaces them
  jobsRefreshTimer: null,
};

const $ = (id) => document.getElementById(id);

/** An HTTP failure with a message for people. Status 0 means that no response arrived. */
class ApiError extends Error {
  constructor(status, message, retryAfterSeconds = null) {
    super(message);
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

// ---------------------------------------------------------------- token

function storedToken() {
  return sessionStorage.getItem(TOKEN_STORAGE_KEY) || "";
}

function authHeaders() {
  const token = storedToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Show the token form. `retry` runs after the user submits a token. */
function askForToken(retry) {
  // Several requests can fail with 401 at once (the job list and an upload), so each one is repeated.
  if (retry && !state.retryAfterToken.includes(retry)) state.retryAfterToken.push(retry);
  // The server's 401 message is written for curl users, so the page words it for people instead.
  $("token-message").textContent = storedToken()
    ? "The server rejected this token. Enter the correct one."
    : "This server requires an access token. Ask its administrator for it.";
  $("token-section").hidden = false;
  $("token-input").focus();
}

function onTokenSubmit(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  // sessionStorage keeps the token for this tab only. It is gone when the tab closes.
  sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
  $("token-input").value = "";
  $("token-section").hidden = true;

  const retries = state.retryAfterToken;
  state.retryAfterToken = [];
  for (const retry of retries) retry();
}

// ---------------------------------------------------------------- HTTP

function serverUnreachableMessage() {
  return `Cannot reach the kvis server at ${location.origin}. ` +
    "It may be down or the network may be unavailable. Check that the server runs, then try again.";
}

/** Build an ApiError from a failed response's status, headers and body text. */
function apiErrorFrom(status, statusText, contentType, bodyText, retryAfterHeader) {
  let reason = "";
  if (contentType && contentType.includes("application/json")) {
    try {
      const body = JSON.parse(bodyText);
      reason = body.error || "";
    } catch {
      // Fall through to the plain text below.
    }
  }
  if (!reason) reason = (bodyText || "").trim().split("\n")[0];
  // An HTML error page is not a reason worth showing.
  if (!reason || reason.startsWith("<")) reason = `HTTP ${status} ${statusText}`.trim();

  const retryAfter = Number.parseInt(retryAfterHeader || "", 10);
  return new ApiError(status, reason, Number.isFinite(retryAfter) ? retryAfter : null);
}

/** Send a request to the API and return its parsed JSON body (or null when empty). */
async function apiRequest(method, url) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: { Accept: "application/json", ...authHeaders() },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, serverUnreachableMessage());
  }

  const text = await response.text();
  if (!response.ok) {
    throw apiErrorFrom(response.status, response.statusText,
      response.headers.get("Content-Type"), text, response.headers.get("Retry-After"));
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, `The server's response to ${method} ${url} is not JSON.`);
  }
}

/**
 * Upload a file as multipart field "file" with XMLHttpRequest, because fetch has no
 * upload progress events. Resolves with the parsed JSON body.
 */
function uploadWithProgress(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);

    xhr.upload.addEventListener("progress", (event) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "The server's response to the upload is not JSON."));
        }
        return;
      }
      reject(apiErrorFrom(xhr.status, xhr.statusText, xhr.getResponseHeader("Content-Type"),
        xhr.responseText, xhr.getResponseHeader("Retry-After")));
    });
    // A server that closes the connection early (for example after a 413) also lands here.
    xhr.addEventListener("error", () => reject(new ApiError(0, serverUnreachableMessage())));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was aborted.")));

    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** End a server message with a full stop unless it already ends a sentence. */
function asSentence(text) {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** Turn an ApiError into a sentence for the page, adding what to do next. */
function describeError(error, action) {
  if (!(error instanceof ApiError)) return `${action} failed: ${asSentence(error.message)}`;
  switch (error.status) {
    case 0:
      return error.message;
    case 413:
      return `${action} failed: the file is larger than this server accepts (${error.message}).`;
    case 503: {
      const wait = error.retryAfterSeconds ? ` Try again in ${error.retryAfterSeconds} s.` : " Try again later.";
      // The server's own message repeats the retry time in curl terms, so it is left out.
      return `The server's render queue is full.${wait}`;
    }
    case 500:
      return `${action} failed because of an error in the server: ${asSentence(error.message)} ` +
        "The server log has the details.";
    default:
      return `${action} failed: ${asSentence(error.message)}`;
  }
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

/**
 * Show an error next to the action that caused it. A 401 opens the token form instead,
 * and the action is repeated once a token is entered.
 */
function reportError(error, element, action, retry) {
  if (error instanceof ApiError && error.status === 401) {
    showError(element, "");
    askForToken(retry);
    return;
  }
  showError(element, describeError(error, action));
}

// ---------------------------------------------------------------- formatting

function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  const number = Number(value);
  if (number === 0) return "0";
  const magnitude = Math.abs(number);
  return magnitude >= 1e5 || magnitude < 1e-3 ? number.toExponential(3) : String(Number(number.toPrecision(4)));
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

function fieldLabel(field) {
  const components = field.components > 1 ? `, ${field.components} components` : "";
  return `${field.name} (${field.association}${components})`;
}

// ---------------------------------------------------------------- upload

function onFileChosen(file) {
  if (!file) return;
  showError($("upload-error"), "");
  if (file.size === 0) {
    showError($("upload-error"), `${file.name} is empty. Choose the .tar.gz of the VTK folder.`);
    return;
  }
  uploadFile(file);
}

async function uploadFile(file) {
  const row = $("upload-progress-row");
  const bar = $("upload-progress");
  const text = $("upload-progress-text");
  row.hidden = false;
  bar.value = 0;
  text.textContent = `Uploading ${file.name}…`;
  $("file-input").disabled = true;
  $("drop-zone").classList.add("busy");

  try {
    const body = await uploadWithProgress("uploads", file, (loaded, total) => {
      const percent = total ? (100 * loaded) / total : 0;
      bar.value = percent;
      text.textContent = `Uploading ${file.name}: ${formatBytes(loaded)} of ${formatBytes(total)} (${percent.toFixed(0)} %)`;
      // After the last byte the server still extracts and inspects the archive.
      if (loaded >= total) text.textContent = `Uploaded ${formatBytes(total)}; the server is reading the archive…`;
    });
    bar.value = 100;
    text.textContent = `Uploaded ${file.name} (${formatBytes(file.size)}).`;
    showUpload(body, file.name);
  } catch (error) {
    row.hidden = true;
    reportError(error, $("upload-error"), `Uploading ${file.name}`, () => uploadFile(file));
  } finally {
    $("file-input").disabled = false;
    $("file-input").value = "";  // so that choosing the same file again fires "change"
    $("drop-zone").classList.remove("busy");
  }
}

/** Convert the POST /uploads response ({id, summary: inspect --json output}) to the page's names. */
function normalizeUpload(body) {
  const summary = body.summary || {};
  return {
    id: body.id,
    summary: {
      layout: summary.layout,
      steps: summary.steps,
      firstTime: summary.first_time,
      lastTime: summary.last_time,
      parts: summary.parts || [],
      fields: summary.fields || [],
    },
  };
}

function showUpload(body, fileName) {
  const upload = normalizeUpload(body);
  state.uploadId = upload.id;
  state.summary = upload.summary;

  showSummary(upload.summary, fileName);
  fillRenderForm(upload.summary);

  $("summary-section").hidden = false;
  $("render-section").hidden = false;
  showError($("render-error"), upload.summary.fields.length ? "" :
    "The archive has no fields to colour by, so there is nothing to render.");
  $("render-button").disabled = upload.summary.fields.length === 0;
  $("summary-heading").focus();
}

function addSummaryItem(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function showSummary(summary, fileName) {
  const list = $("summary-list");
  list.replaceChildren();
  addSummaryItem(list, "File", fileName);
  addSummaryItem(list, "Time steps", String(summary.steps));
  addSummaryItem(list, "Time", `${formatNumber(summary.firstTime)} to ${formatNumber(summary.lastTime)}`);
  addSummaryItem(list, "Parts", summary.parts.join(", ") || "–");
  if (summary.layout) addSummaryItem(list, "Layout", summary.layout);

  const rows = summary.fields.map((field) => {
    const row = document.createElement("tr");
    const range = field.range || [null, null];
    for (const value of [field.name, field.association, String(field.components),
      formatNumber(range[0]), formatNumber(range[1])]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  });
  $("fields-table").tBodies[0].replaceChildren(...rows);
}

// ---------------------------------------------------------------- render form

// Id arrays such as foamToVTK 2.x's cellID make dull movies, so they are not the default.
function defaultFieldIndex(fields) {
  const index = fields.findIndex((field) => !/id$/i.test(field.name));
  return index >= 0 ? index : 0;
}

function fillRenderForm(summary) {
  const select = $("field-select");
  select.replaceChildren(...summary.fields.map((field, index) => new Option(fieldLabel(field), String(index))));
  select.selectedIndex = defaultFieldIndex(summary.fields);
  onFieldChanged();

  const parts = summary.parts.length ? summary.parts : ["internal"];
  const checks = parts.map((part) => {
    const label = document.createElement("label");
    label.className = "inline";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "parts";
    box.value = part;
    // The internal mesh alone is the usual picture. Without an internal mesh, every patch is drawn.
    box.checked = parts.includes("internal") ? part === "internal" : true;
    label.append(box, ` ${part}`);
    return label;
  });
  $("parts-list").replaceChildren(...checks);
}

function selectedField() {
  const fields = state.summary ? state.summary.fields : [];
  return fields[Number($("field-select").value)] || null;
}

/** Offer the components the chosen field has, and its range as the fixed range's start. */
function onFieldChanged() {
  const field = selectedField();
  const select = $("component-select");
  const previous = select.value;
  const options = [new Option(field && field.components > 1 ? "magnitude" : "value (scalar)", "mag")];
  if (field && field.components > 1) {
    // The renderer offers x, y and z only, so a tensor is drawn as its magnitude or one of its first three components.
    for (const axis of ["x", "y", "z"].slice(0, Math.min(field.components, 3))) options.push(new Option(axis, axis));
  }
  select.replaceChildren(...options);
  select.value = options.some((option) => option.value === previous) ? previous : "mag";
  select.disabled = options.length === 1;

  const range = field && field.range;
  if (range && Number.isFinite(range[0]) && Number.isFinite(range[1])) {
    $("range-min").value = String(range[0]);
    $("range-max").value = String(range[1]);
  }
}

function onSizeChanged() {
  const custom = $("size-select").value === "custom";
  $("custom-size").hidden = !custom;
  if (custom) $("width-input").focus();
}

function onRangeModeChanged() {
  const fixed = document.querySelector('input[name="range-mode"]:checked').value === "fixed";
  $("fixed-range").hidden = !fixed;
}

/** A form value the user must correct. Its message is shown as is. */
class FormError extends Error {}

function chosenSize() {
  if ($("size-select").value !== "custom") return $("size-select").value;
  const width = Number($("width-input").value);
  const height = Number($("height-input").value);
  // libx264 with yuv420p needs even dimensions.
  for (const [name, value] of [["Width", width], ["Height", height]]) {
    if (!Number.isInteger(value) || value < 16 || value > 7680 || value % 2 !== 0) {
      throw new FormError(`${name} must be an even whole number of pixels from 16 to 7680, not "${value}".`);
    }
  }
  return `${width}x${height}`;
}

function chosenRange() {
  const min = Number.parseFloat($("range-min").value);
  const max = Number.parseFloat($("range-max").value);
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    throw new FormError("Enter numbers for both Min and Max of the fixed colour range, or choose automatic.");
  }
  if (!(min < max)) throw new FormError(`The colour range Min (${min}) must be less than Max (${max}).`);
  return `${min},${max}`;
}

/** Read the form into the query parameters of POST /jobs (the CLI's option names). */
function renderParameters() {
  const field = selectedField();
  if (!field) throw new FormError("Choose a field to colour by.");

  const parts = [...document.querySelectorAll('#parts-list input[name="parts"]:checked')].map((box) => box.value);
  if (parts.length === 0) throw new FormError("Choose at least one part to draw.");

  const fps = Number($("fps-input").value);
  if (!Number.isInteger(fps) || fps < 1 || fps > 120) {
    throw new FormError(`Frames per second must be a whole number from 1 to 120, not "${$("fps-input").value}".`);
  }

  const colormap = $("colormap-select").value + ($("colormap-reversed").checked ? "_r" : "");
  const params = new URLSearchParams({
    upload: state.uploadId,
    field: field.name,
    association: field.association,
    component: $("component-select").value,
    parts: parts.join(","),
    colormap,
    view: $("view-select").value,
    size: chosenSize(),
    fps: String(fps),
  });
  if (document.querySelector('input[name="range-mode"]:checked').value === "fixed") {
    params.set("range", chosenRange());
  }
  return params;
}

function describeSettings(params) {
  const component = params.get("component") === "mag" ? "" : ` ${params.get("component")}`;
  const range = params.get("range") ? `, range ${params.get("range").replace(",", " to ")}` : "";
  return `${params.get("field")}${component} (${params.get("association")}), ${params.get("colormap")}, ` +
    `${params.get("size")} at ${params.get("fps")} frames/s${range}`;
}

async function onRenderSubmit(event) {
  event.preventDefault();
  showError($("render-error"), "");

  let params;
  try {
    params = renderParameters();
  } catch (error) {
    if (!(error instanceof FormError)) throw error;
    showError($("render-error"), error.message);
    return;
  }
  await startJob(params);
}

async function startJob(params) {
  const button = $("render-button");
  button.disabled = true;
  try {
    const job = await apiRequest("POST", `jobs?${params}`);
    followJob(job.id, describeSettings(params));
    refreshJobs();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      // The server deletes uploads after its retention time. The form stays, so only the file must be sent again.
      showError($("render-error"), `${describeError(error, "Starting the render")} ` +
        "The upload may have expired: choose the file again, then render.");
      $("upload-section").scrollIntoView({ block: "nearest" });
    } else {
      reportError(error, $("render-error"), "Starting the render", () => startJob(params));
    }
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- job progress

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Show the job in the Movie section and poll it until it ends or another job replaces it. */
function followJob(jobId, settingsText) {
  state.jobId = jobId;
  releaseObjectUrls();

  $("job-section").hidden = false;
  $("job-title").textContent = `Job ${jobId}${settingsText ? `: ${settingsText}` : ""}`;
  $("job-progress-row").hidden = false;
  $("movie-area").hidden = true;
  $("cancel-button").disabled = false;
  showError($("job-error"), "");
  showJobProgress({ status: "queued" });
  $("job-section").scrollIntoView({ block: "nearest" });

  pollJob(jobId);
}

async function pollJob(jobId) {
  let interval = POLL_INTERVAL_MIN_MS;
  let failures = 0;

  while (state.jobId === jobId) {
    let job;
    try {
      job = await apiRequest("GET", `jobs/${encodeURIComponent(jobId)}`);
      failures = 0;
    } catch (error) {
      if (state.jobId !== jobId) return;
      const transient = error instanceof ApiError && (error.status === 0 || error.status >= 502);
      failures += 1;
      if (!transient || failures >= POLL_MAX_FAILURES) {
        reportError(error, $("job-error"), "Reading the job's progress", () => pollJob(jobId));
        $("job-progress-text").textContent = "Progress unknown.";
        return;
      }
      await sleep(POLL_INTERVAL_MAX_MS);
      continue;
    }

    if (state.jobId !== jobId) return;
    showJobProgress(job);
    if (TERMINAL_STATUSES.has(job.status)) {
      finishJob(job);
      return;
    }
    await sleep(interval);
    interval = Math.min(interval * POLL_BACKOFF, POLL_INTERVAL_MAX_MS);
  }
}

function showJobProgress(job) {
  const bar = $("job-progress");
  const text = $("job-progress-text");
  const total = job.frames_total || 0;
  const done = job.frames_done || 0;

  if (job.status === "queued") {
    bar.removeAttribute("value");  // an indeterminate bar: nothing is measurable yet
    text.textContent = "Waiting in the render queue…";
  } else if (job.status === "running" && total === 0) {
    bar.removeAttribute("value");
    // Before the first frame the renderer finds the steps, then reads them all for the colour range.
    text.textContent = job.stage === "prepass"
      ? "Reading every time step for the colour range…"
      : "Reading the time steps…";
  } else if (job.status === "running") {
    bar.max = total;
    bar.value = done;
    const rate = job.fps ? `, ${formatNumber(job.fps)} frames/s` : "";
    const eta = job.eta_s !== null && job.eta_s !== undefined ? `, about ${formatDuration(job.eta_s)} left` : "";
    text.textContent = `Rendering: ${done} of ${total} frames${rate}${eta}`;
  } else if (job.status === "done") {
    bar.max = total || 1;
    bar.value = total || 1;
    const rate = job.fps ? ` at ${formatNumber(job.fps)} frames/s` : "";
    text.textContent = `Done: ${total} frames rendered${rate}.`;
  } else if (job.status === "cancelled" || job.status === "failed") {
    // A determinate bar stops the "busy" animation of an indeterminate one.
    bar.max = total || 1;
    bar.value = done;
    const verb = job.status === "cancelled" ? "Cancelled" : "Failed";
    text.textContent = total ? `${verb} after ${done} of ${total} frames.` : `${verb} before the first frame.`;
  }
}

function finishJob(job) {
  $("cancel-button").disabled = true;
  if (job.status === "done") {
    showMovie(job.id);
  } else if (job.status === "failed") {
    showError($("job-error"), `The render failed: ${asSentence(job.error || "the server gave no reason")} ` +
      "Change the settings and render again.");
  }
  refreshJobs();
}

async function onCancel() {
  const jobId = state.jobId;
  if (!jobId) return;
  $("cancel-button").disabled = true;
  try {
    await apiRequest("DELETE", `jobs/${encodeURIComponent(jobId)}`);
    // The poll loop shows the "cancelled" status when the server reports it.
  } catch (error) {
    $("cancel-button").disabled = false;
    reportError(error, $("job-error"), "Cancelling the job", onCancel);
  }
}

// ---------------------------------------------------------------- movie

function releaseObjectUrls() {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
}

/**
 * Fetch a file with the token header and return a blob: URL. A <video> or <img> cannot
 * send an Authorization header, so with a token the page downloads the file itself.
 * NOTE: the browser then keeps the whole movie in memory, and playback waits for all of it.
 */
async function fetchAsObjectUrl(url) {
  let response;
  try {
    response = await fetch(url, { headers: authHeaders(), cache: "no-store" });
  } catch {
    throw new ApiError(0, serverUnreachableMessage());
  }
  if (!response.ok) {
    throw apiErrorFrom(response.status, response.statusText, response.headers.get("Content-Type"),
      await response.text(), response.headers.get("Retry-After"));
  }
  const objectUrl = URL.createObjectURL(await response.blob());
  state.objectUrls.push(objectUrl);
  return objectUrl;
}

function movieUrl(jobId) {
  return `jobs/${encodeURIComponent(jobId)}/movie.mp4`;
}

function posterUrl(jobId) {
  return `jobs/${encodeURIComponent(jobId)}/poster.jpg`;
}

async function showMovie(jobId) {
  const video = $("movie");
  const poster = $("poster");
  const link = $("download-link");
  $("movie-note").textContent = "";

  try {
    // Without a token the browser streams the movie with HTTP Range requests, so it can seek at once.
    const useBlobs = Boolean(storedToken());
    const movieSource = useBlobs ? await fetchAsObjectUrl(movieUrl(jobId)) : movieUrl(jobId);
    const posterSource = useBlobs ? await fetchAsObjectUrl(posterUrl(jobId)).catch(() => "") : posterUrl(jobId);
    if (state.jobId !== jobId) return;

    video.poster = posterSource;
    video.src = movieSource;
    link.href = movieSource;
    link.download = `kvis-${jobId}.mp4`;
    poster.closest("figure").hidden = !posterSource;
    if (posterSource) poster.src = posterSource;
    $("movie-area").hidden = false;
  } catch (error) {
    reportError(error, $("job-error"), "Loading the movie", () => showMovie(jobId));
  }
}

function onVideoError() {
  const video = $("movie");
  if (!video.getAttribute("src")) return;
  const code = video.error ? video.error.code : 0;
  // MEDIA_ERR_SRC_NOT_SUPPORTED (4) is what a browser without an H.264 decoder reports.
  $("movie-note").textContent = code === 4
    ? "This browser cannot play this H.264 movie; download it and play it with another player."
    : "The movie could not be loaded; it may have been removed from the server. Download it or render it again.";
}

function onPosterError() {
  $("poster").closest("figure").hidden = true;
}

// ---------------------------------------------------------------- recent jobs

function jobSettingsText(job) {
  // job.options contains the render options as sent (CLI names). job.fps is the render rate, not the movie's.
  const settings = job.options || {};
  const parts = [];
  if (settings.field) parts.push(settings.field);
  if (settings.colormap) parts.push(settings.colormap);
  const size = Array.isArray(settings.size) ? settings.size.join("x") : settings.size;
  if (size) parts.push(size);
  if (settings.fps) parts.push(`${settings.fps} frames/s`);
  return parts.join(", ") || "–";
}

function jobStatusText(job) {
  if (job.status === "running" && job.frames_total) return `running (${job.frames_done || 0}/${job.frames_total})`;
  if (job.status === "failed" && job.error) return `failed: ${job.error}`;
  return job.status || "unknown";
}

function jobMovieCell(job) {
  const cell = document.createElement("td");
  if (job.status !== "done") {
    cell.textContent = "–";
    return cell;
  }
  if (!job.movie) {
    cell.textContent = "removed";
    return cell;
  }
  const play = document.createElement("button");
  play.type = "button";
  play.textContent = "Play";
  play.setAttribute("aria-label", `Play the movie of job ${job.id}`);
  play.addEventListener("click", () => {
    followJob(job.id, jobSettingsText(job));
  });
  cell.append(play);

  // A plain link cannot send the token, so with a token the download link appears after "Play".
  if (!storedToken()) {
    const link = document.createElement("a");
    link.href = movieUrl(job.id);
    link.download = `kvis-${job.id}.mp4`;
    link.textContent = "Download";
    cell.append(" ", link);
  }
  return cell;
}

function jobRow(job) {
  const row = document.createElement("tr");
  row.dataset.jobId = job.id;
  const idCell = document.createElement("td");
  const code = document.createElement("code");
  code.textContent = job.id;
  idCell.append(code);
  const settingsCell = document.createElement("td");
  settingsCell.textContent = jobSettingsText(job);
  const statusCell = document.createElement("td");
  statusCell.textContent = jobStatusText(job);
  statusCell.className = `status status-${job.status}`;
  row.append(idCell, settingsCell, statusCell, jobMovieCell(job));
  return row;
}

async function refreshJobs() {
  clearTimeout(state.jobsRefreshTimer);
  state.jobsRefreshTimer = null;
  try {
    const body = await apiRequest("GET", "jobs");
    const jobs = (body && body.jobs) || [];
    $("jobs-table").tBodies[0].replaceChildren(...jobs.map(jobRow));
    $("jobs-table").hidden = jobs.length === 0;
    $("jobs-empty").hidden = jobs.length > 0;
    showError($("jobs-error"), "");

    if (jobs.some((job) => !TERMINAL_STATUSES.has(job.status))) {
      state.jobsRefreshTimer = setTimeout(refreshJobs, JOBS_REFRESH_MS);
    }
  } catch (error) {
    reportError(error, $("jobs-error"), "Listing the recent jobs", refreshJobs);
  }
}

// ---------------------------------------------------------------- wiring

function setUpDropZone() {
  const zone = $("drop-zone");
  // Without preventDefault on dragover the browser would open the dropped file instead.
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("drag-over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("drag-over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer ? event.dataTransfer.files : [];
    if (files.length > 1) {
      showError($("upload-error"), "Drop one archive at a time.");
      return;
    }
    onFileChosen(files[0]);
  });
  // A file dropped next to the zone would otherwise replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

function main() {
  $("token-form").addEventListener("submit", onTokenSubmit);
  $("file-input").addEventListener("change", (event) => onFileChosen(event.target.files[0]));
  setUpDropZone();

  $("render-form").addEventListener("submit", onRenderSubmit);
  $("field-select").addEventListener("change", onFieldChanged);
  $("size-select").addEventListener("change", onSizeChanged);
  for (const radio of document.querySelectorAll('input[name="range-mode"]')) {
    radio.addEventListener("change", onRangeModeChanged);
  }

  $("cancel-button").addEventListener("click", onCancel);
  $("movie").addEventListener("error", onVideoError);
  $("poster").addEventListener("error", onPosterError);
  $("jobs-refresh").addEventListener("click", refreshJobs);

  refreshJobs();
}

main();
