/* Gatehouse console, Data pages: presentation only (the API decides everything).
   - Forms marked `data-verdict-api` call the API and show its answer in the region `data-verdict` names: each
     [data-field] gets that field (a list becomes list items), and the [data-when] branch matching the answer's
     `ok` is shown; the wording is the page's own.
   - Filter forms with datetime-local inputs (`data-iso-into`) pass the time on as ISO 8601 with its timezone. */
(function () {
  "use strict";
  var g = window.gatehouse;

  function fill(region, answer) {
    Array.prototype.forEach.call(region.querySelectorAll("[data-field]"), function (el) {
      var value = answer[el.dataset.field];
      if (Array.isArray(value)) {
        el.textContent = "";
        value.forEach(function (item) { var li = document.createElement("li"); li.textContent = String(item); el.appendChild(li); });
      } else {
        el.textContent = value == null ? "" : String(value);
      }
    });
    Array.prototype.forEach.call(region.querySelectorAll("[data-when]"), function (el) {
      el.hidden = el.dataset.when !== String(Boolean(answer.ok));
    });
    region.hidden = false;
    region.focus();
  }

  document.addEventListener("submit", async function (event) {
    var form = event.target;
    if (!form.matches("form[data-verdict-api]")) return;
    event.preventDefault();
    var path = form.dataset.verdictApi;
    Array.prototype.forEach.call(form.elements, function (input) {
      if (input.name) path = path.split("{" + input.name + "}").join(encodeURIComponent(input.value));
    });
    var region = document.querySelector(form.dataset.verdict);
    var line = form.querySelector(".form-error");
    var buttons = form.querySelectorAll("button");
    if (line) line.hidden = true;
    if (region) region.hidden = true;
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; b.setAttribute("aria-busy", "true"); });
    try {
      var answer = await g.api((form.dataset.method || "POST").toUpperCase(), path);
      if (region) fill(region, answer);
    } catch (error) {
      var message = error && error.message ? error.message : String(error);
      if (line) { line.textContent = message; line.hidden = false; } else { g.toast(message, "error"); }
    } finally {
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; b.removeAttribute("aria-busy"); });
    }
  });

  /* datetime-local <-> ISO: shown in the viewer's zone, sent with the zone. */
  function pad(n) { return String(n).padStart(2, "0"); }
  function localValue(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return "";
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("input[data-iso-into]"), function (input) {
      var target = input.form && input.form.elements[input.dataset.isoInto];
      if (target && target.value) input.value = localValue(target.value);
    });
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("data-api") || form.hasAttribute("data-verdict-api")) return;
    Array.prototype.forEach.call(form.querySelectorAll("input[data-iso-into]"), function (input) {
      var target = form.elements[input.dataset.isoInto];
      var d = input.value ? new Date(input.value) : null;
      if (target) target.value = d && !isNaN(d) ? d.toISOString() : "";
      input.disabled = true;  // only the ISO value goes into the address
    });
    Array.prototype.forEach.call(form.elements, function (input) {
      if (input.name && input.value === "" && input.type !== "submit") input.disabled = true;  // no empty filters
    });
  });
})();
