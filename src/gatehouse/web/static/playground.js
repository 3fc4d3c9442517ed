/* The playground: sends the conversation to POST /v1/chat/completions as the signed-in user (session cookie +
   CSRF header), shows the answer as it streams, stops it on request, and shows the tokens the final usage chunk
   counts. Errors are shown as the API words them. */
(function () {
  "use strict";

  var form, log, status, stopButton, sendButton, history = [], controller = null;

  function el(id) { return document.getElementById(id); }

  function bubble(kind, text) {
    var item = document.createElement("div");
    item.className = "msg " + kind;
    var who = document.createElement("strong");
    who.textContent = kind === "user" ? "You" : kind === "assistant" ? "Model" : "Error";
    var body = document.createElement("span");
    body.className = "msg-text";
    body.textContent = text || "";
    item.appendChild(who);
    item.appendChild(document.createTextNode(": "));
    item.appendChild(body);
    log.appendChild(item);
    return body;
  }

  function setStatus(text) { status.textContent = text; }

  function setTokens(usage) {
    el("pg-prompt-tokens").textContent = usage && usage.prompt_tokens != null ? String(usage.prompt_tokens) : "—";
    el("pg-completion-tokens").textContent = usage && usage.completion_tokens != null ? String(usage.completion_tokens) : "—";
  }

  function errorMessage(body, status) {
    return new window.gatehouse.ApiError(status, body).message;
  }

  async function readError(response) {
    var text = await response.text(), body = null;
    try { body = JSON.parse(text); } catch (e) { body = { error: { message: text.slice(0, 300) || ("HTTP " + response.status) } }; }
    return errorMessage(body, response.status);
  }

  /* Server-sent events from a fetch body: calls onData with each `data:` payload. */
  async function readEvents(response, onData) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop();
      events.forEach(function (event) {
        var data = event.split(/\r?\n/).filter(function (line) { return line.indexOf("data:") === 0; })
          .map(function (line) { return line.slice(5).trim(); }).join("\n");
        if (data) onData(data);
      });
    }
  }

  async function send() {
    var message = el("pg-message").value.trim();
    if (!message || controller) return;
    var system = el("pg-system").value.trim();
    history.push({ role: "user", content: message });
    bubble("user", message);
    el("pg-message").value = "";
    var messages = (system ? [{ role: "system", content: system }] : []).concat(history);
    controller = new AbortController();
    sendButton.disabled = true; stopButton.disabled = false;
    setTokens(null);
    setStatus("Waiting for " + el("pg-model").value + "…");
    var answer = null, text = "", usage = null, failed = null;
    try {
      var response = await fetch("/v1/chat/completions", {
        method: "POST", credentials: "same-origin", signal: controller.signal,
        headers: { "content-type": "application/json", "accept": "text/event-stream", "x-csrf-token": window.gatehouse.cookie("gatehouse_csrf") },
        body: JSON.stringify({ model: el("pg-model").value, messages: messages, stream: true, stream_options: { include_usage: true } })
      });
      if (!response.ok) { failed = await readError(response); }
      else {
        setStatus("Streaming…");
        answer = bubble("assistant", "");
        await readEvents(response, function (data) {
          if (data === "[DONE]") return;
          var parsed;
          try { parsed = JSON.parse(data); } catch (e) { return; }
          if (parsed.error) { failed = errorMessage(parsed, 0); return; }
          (parsed.choices || []).forEach(function (choice) {
            var piece = choice.delta && choice.delta.content;
            if (piece) { text += piece; answer.textContent = text; }
          });
          if (parsed.usage) { usage = parsed.usage; setTokens(usage); }
        });
      }
      if (failed) { bubble("error", failed); setStatus("Failed."); }
      else { setStatus(usage ? "Done." : "Done (no token count was reported)."); }
    } catch (error) {
      if (error.name === "AbortError") setStatus("Stopped by you.");
      else { bubble("error", "The server could not be reached: " + error.message); setStatus("Failed."); }
    } finally {
      if (text) history.push({ role: "assistant", content: text });
      else if (!answer) history.pop();  // nothing came back: this turn is not part of the conversation
      controller = null;
      sendButton.disabled = false; stopButton.disabled = true;
      el("pg-message").focus();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    form = el("playground");
    if (!form) return;
    log = el("pg-log"); status = el("pg-status"); stopButton = el("pg-stop"); sendButton = el("pg-send");
    form.addEventListener("submit", function (event) { event.preventDefault(); send(); });
    el("pg-message").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); send(); }
    });
    stopButton.addEventListener("click", function () { if (controller) controller.abort(); });
    el("pg-clear").addEventListener("click", function () {
      if (controller) controller.abort();
      history = []; log.textContent = ""; setTokens(null); setStatus("Ready.");
    });
  });
})();
