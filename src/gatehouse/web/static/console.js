/* Gatehouse console: the only script every page loads. It has no business logic: forms and buttons call the
   JSON API as marked up by the server (session cookie + CSRF header), errors are shown as the API words them,
   and live parts of a page are re-read from the server when the live event feed says something changed. */
(function () {
  "use strict";

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function ApiError(status, body) {
    var error = body && body.error;
    var message = (error && (error.message || error.code)) || (body && body.detail) || ("HTTP " + status);
    if (typeof message !== "string") message = JSON.stringify(message);
    this.status = status; this.body = body; this.message = message;
    this.param = error && error.param;
  }

  /* Call the API as the signed-in user: JSON in, JSON (or a Response for files) out; throws ApiError. */
  async function api(method, path, body, options) {
    options = options || {};
    var headers = { "accept": "application/json" };
    if (method !== "GET" && method !== "HEAD" && !options.noCsrf) headers["x-csrf-token"] = cookie("gatehouse_csrf");
    if (body !== undefined) headers["content-type"] = "application/json";
    var response = await fetch(path, {
      method: method, headers: headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body), signal: options.signal
    });
    if (options.raw && response.ok) return response;
    var text = await response.text();
    var parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { error: { message: text.slice(0, 300) } }; }
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }

  function toast(message, kind) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var item = document.createElement("div");
    item.className = "toast" + (kind ? " " + kind : "");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, kind === "error" ? 9000 : 4000);
  }

  /* A toast that survives the reload a change ends with. */
  function toastAfterReload(message) {
    try { sessionStorage.setItem("gatehouse-toast", message); } catch (e) { /* private mode */ }
  }

  function valueOf(input) {
    var type = input.dataset.type || (input.type === "checkbox" ? "bool" : input.type === "number" ? "number" : "");
    var raw = input.value;
    if (type === "bool") return input.checked;
    if (input.tagName === "SELECT" && input.multiple) {
      return Array.prototype.filter.call(input.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
    }
    if (raw === "") return undefined;
    switch (type) {
      case "int": return /^-?\d+$/.test(raw.trim()) ? parseInt(raw, 10) : raw;
      case "number": return isNaN(Number(raw)) ? raw : Number(raw);
      case "list": return raw.split(/[\n,]/).map(function (s) { return s.trim(); }).filter(Boolean);
      case "json": try { return JSON.parse(raw); } catch (e) { return raw; }
      case "datetime": var d = new Date(raw); return isNaN(d) ? raw : d.toISOString();
      default: return raw;
    }
  }

  /* A form's fields as the API's JSON body (and query parameters, and path placeholders). */
  function collect(form) {
    var body = {}, query = {}, path = form.dataset.api;
    Array.prototype.forEach.call(form.elements, function (input) {
      if (!input.name || input.disabled || input.type === "submit") return;
      if (input.type === "radio" && !input.checked) return;
      var value = valueOf(input);
      if (value === undefined) {
        if (input.dataset.empty === "null") value = null; else return;
      }
      if (path.indexOf("{" + input.name + "}") >= 0) {
        path = path.split("{" + input.name + "}").join(encodeURIComponent(value));
      } else if (input.dataset.in === "query") {
        query[input.name] = value;
      } else {
        var parts = input.name.split(".");  // a.b: nested objects
        var target = body;
        for (var i = 0; i < parts.length - 1; i++) target = target[parts[i]] = target[parts[i]] || {};
        target[parts[parts.length - 1]] = value;
      }
    });
    var qs = new URLSearchParams(query).toString();
    return { path: qs ? path + (path.indexOf("?") >= 0 ? "&" : "?") + qs : path, body: body };
  }

  function showError(form, error) {
    var line = form.querySelector(".form-error");
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (el) { el.removeAttribute("aria-invalid"); });
    var message = error.message;
    if (error.param) {
      var name = String(error.param).split(".").pop();
      var input = form.querySelector('[name="' + name + '"]') || form.querySelector('[name$=".' + name + '"]');
      if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
    }
    if (line) { line.textContent = message; line.hidden = false; } else { toast(message, "error"); }
  }

  /* Fill a result region: each [data-field] gets that field of the answer; the region is shown. */
  function show(selector, result) {
    var region = document.querySelector(selector);
    if (!region) return;
    Array.prototype.forEach.call(region.querySelectorAll("[data-field]"), function (el) {
      var value = result;
      el.dataset.field.split(".").forEach(function (k) { value = value == null ? value : value[k]; });
      var text = value == null ? "" : (typeof value === "object" ? JSON.stringify(value, null, 2) : String(value));
      if (el.tagName === "INPUT" || el.tagName === "TEXTAREA") el.value = text; else el.textContent = text;
    });
    region.hidden = false;
    var focus = region.querySelector("[data-focus]") || region;
    if (focus.focus) focus.focus();
  }

  async function download(response) {
    var blob = await response.blob();
    var disposition = response.headers.get("content-disposition") || "";
    var match = disposition.match(/filename="?([^";]+)"?/);
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = match ? match[1] : "download";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  async function submit(form, submitter) {
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var request = collect(form);
    var method = (form.dataset.method || "POST").toUpperCase();
    var buttons = form.querySelectorAll("button");
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    var line = form.querySelector(".form-error");
    if (line) line.hidden = true;
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (el) { el.removeAttribute("aria-invalid"); });
    try {
      var hasBody = method !== "GET" && method !== "DELETE" || Object.keys(request.body).length > 0;
      var options = { noCsrf: form.hasAttribute("data-no-csrf"), raw: form.hasAttribute("data-download") };
      var result = await api(method, request.path, hasBody ? request.body : undefined, options);
      if (form.hasAttribute("data-download")) { await download(result); toast(form.dataset.success || "Downloaded"); return; }
      if (form.hasAttribute("data-then-login")) {
        await api("POST", "/auth/login", { email: request.body.email, password: request.body.password }, { noCsrf: true });
      }
      if (form.dataset.show) { show(form.dataset.show, result); form.reset(); toast(form.dataset.success || "Done"); return; }
      if (form.dataset.redirect) { window.location.assign(form.dataset.redirect); return; }
      toastAfterReload(form.dataset.success || "Saved");
      window.location.reload();
    } catch (error) {
      if (!(error instanceof ApiError)) error = new ApiError(0, { error: { message: "The server could not be reached: " + error.message } });
      showError(form, error);
    } finally {
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-api]")) return;
    event.preventDefault();
    submit(form, event.submitter);
  });

  document.addEventListener("click", async function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var source = document.querySelector(copy.dataset.copy);
      var text = source ? (source.value !== undefined ? source.value : source.textContent) : "";
      try { await navigator.clipboard.writeText(text); toast("Copied"); }
      catch (e) { if (source && source.select) { source.select(); document.execCommand("copy"); toast("Copied"); } }
      return;
    }
    if (event.target.closest("[data-sign-out]")) {
      try { await api("POST", "/auth/logout"); } catch (e) { /* the session may already be gone */ }
      window.location.assign("/");
    }
  });

  /* ---- times in the viewer's zone ---- */
  function localTimes(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("time[datetime]"), function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) el.title = d.toLocaleString();
    });
  }

  /* ---- live: the event feed, the indicator, and regions re-read from the server ---- */
  var refreshTimer = null, pendingRegions = new Set();

  async function refreshRegions(ids) {
    if (!ids.length) return;
    var response = await fetch(window.location.href, { credentials: "same-origin", headers: { accept: "text/html" } });
    if (!response.ok) return;
    var doc = new DOMParser().parseFromString(await response.text(), "text/html");
    ids.forEach(function (id) {
      var current = document.getElementById(id), fresh = doc.getElementById(id);
      if (!current || !fresh) return;
      if (current.contains(document.activeElement) && current.querySelector("details[open], input:focus, select:focus, textarea:focus")) {
        return;  // the viewer is using a control in it: keep it until they are done
      }
      current.replaceWith(fresh);
      localTimes(fresh);
      if (current.innerHTML !== fresh.innerHTML) fresh.classList.add("live-flash");
      document.dispatchEvent(new CustomEvent("gatehouse:refreshed", { detail: { id: id } }));
    });
  }

  function scheduleRefresh(ids) {
    ids.forEach(function (id) { pendingRegions.add(id); });
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () {
      var wanted = Array.from(pendingRegions);
      pendingRegions.clear(); refreshTimer = null;
      refreshRegions(wanted).catch(function () { /* the next event or tick retries */ });
    }, 400);
  }

  function matches(kind, terms) {
    return terms.some(function (t) { return t === "*" || t === kind || (t.slice(-1) === "." && kind.indexOf(t) === 0); });
  }

  function regionsFor(kind) {
    return Array.prototype.filter.call(document.querySelectorAll("[data-live][id]"), function (el) {
      return kind === "*" || matches(kind, el.dataset.live.split(","));
    }).map(function (el) { return el.id; });
  }

  function setIndicator(state, label) {
    var indicator = document.getElementById("live-indicator");
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.querySelector(".label").textContent = label;
  }

  function follow() {
    if (!document.body.dataset.liveFeed || !window.EventSource) return;
    var kinds = document.body.dataset.liveKinds || "";
    // The indicator also turns amber while Redis or an upstream is reported down.
    var url = "/admin/events" + "?kinds=" + encodeURIComponent((kinds ? kinds + "," : "") + "redis.,upstream.");
    var source = new EventSource(url, { withCredentials: true });
    var degraded = false, lostAt = null, wasOpen = false;
    source.onopen = function () {
      lostAt = null;
      setIndicator(degraded ? "amber" : "green", degraded ? "Live: degraded" : "Live: connected");
      if (wasOpen) scheduleRefresh(regionsFor("*"));  // resumed: catch up on what the gap may hide
      wasOpen = true;
    };
    source.onerror = function () {
      lostAt = lostAt || Date.now();
      if (source.readyState === EventSource.CLOSED) setIndicator("red", "Live: disconnected");
      else setIndicator("amber", "Live: reconnecting");
    };
    setInterval(function () {
      if (lostAt && Date.now() - lostAt > 10000) setIndicator("red", "Live: disconnected");
    }, 2000);
    function handle(kind, event) {
      var data = null;
      try { data = JSON.parse(event.data); } catch (e) { data = event.data; }
      if (kind === "redis.unavailable") degraded = true;
      if (kind === "redis.restored") degraded = false;
      if (source.readyState === EventSource.OPEN) setIndicator(degraded ? "amber" : "green", degraded ? "Live: degraded" : "Live: connected");
      document.dispatchEvent(new CustomEvent("gatehouse:event", { detail: { kind: kind, data: data, id: event.lastEventId } }));
      scheduleRefresh(kind === "gap" ? regionsFor("*") : regionsFor(kind));
    }
    source.onmessage = function (event) { handle("message", event); };
    var known = (document.body.dataset.feedKinds || "").split(",").filter(Boolean);
    known.forEach(function (kind) { source.addEventListener(kind, function (event) { handle(kind, event); }); });
    window.gatehouseFeed = source;
  }

  /* Regions that change without an event (tokens of a running stream): re-read every N seconds while shown. */
  function tick() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-every][id]"), function (el) {
      var seconds = Math.max(parseInt(el.dataset.liveEvery, 10) || 15, 2);
      setInterval(function () { if (!document.hidden) scheduleRefresh([el.id]); }, seconds * 1000);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // On a phone the menu starts folded (one tap opens it); on a wide screen it is always shown.
    var menu = document.querySelector(".nav-toggle");
    if (menu && window.matchMedia("(max-width: 760px)").matches) menu.removeAttribute("open");
    localTimes(document);
    try {
      var message = sessionStorage.getItem("gatehouse-toast");
      if (message) { sessionStorage.removeItem("gatehouse-toast"); toast(message); }
    } catch (e) { /* private mode */ }
    follow();
    tick();
  });

  window.gatehouse = { api: api, toast: toast, cookie: cookie, ApiError: ApiError, refresh: scheduleRefresh };
})();
