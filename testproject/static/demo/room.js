// Room page: message log, message box, status select, notification form.
(function () {
  "use strict";
  var page = document.getElementById("room");
  var log = document.getElementById("log");
  var stateEl = document.getElementById("ws-status");
  var form = document.getElementById("message-form");
  var input = document.getElementById("message-input");
  var statusSelect = document.getElementById("status");
  var notifyForm = document.getElementById("notify-form");
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var ws = null;
  var delay = 500;

  function setState(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  function time(ts) {
    return new Date(ts * 1000).toTimeString().slice(0, 8);
  }

  function append(className, parts) {
    var li = document.createElement("li");
    li.className = className;
    parts.forEach(function (part) {
      var span = document.createElement("span");
      span.className = part[0];
      span.textContent = part[1];
      li.appendChild(span);
    });
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }

  // PRESENCE HOOK (issue 9, second part): channels_nats.presence will send
  // presence_state / presence_diff messages; render them into <ul id="presence">.
  function onPresence(msg) {}

  function onMessage(event) {
    var msg = JSON.parse(event.data);
    if (msg.type === "message") {
      append("message", [["time muted", time(msg.ts) + " "], ["user", msg.user],
        ["text", msg.text], ["via", "via " + msg.server]]);
    } else if (msg.type === "notification") {
      append("notification", [["time muted", time(msg.ts) + " "],
        ["badge", "notice"], ["user", msg.user], ["text", msg.text],
        ["via", "sync view on " + msg.server]]);
    } else if (msg.type === "hello") {
      append("system", [["text", "Joined as " + msg.user + " on " + msg.server]]);
    } else if (msg.type === "status.ack") {
      append("system", [["text", "Status set to " + msg.status]]);
    } else if (msg.type === "presence_state" || msg.type === "presence_diff") {
      onPresence(msg);
    } else if (msg.type === "error") {
      append("system", [["text", "Error: " + msg.error]]);
    }
  }

  function connect() {
    setState("connecting", "connecting\u2026");
    ws = new WebSocket(scheme + location.host + page.dataset.wsPath);
    ws.onopen = function () {
      delay = 500;
      setState("open", "connected");
      if (statusSelect.value !== "online") { sendStatus(); }
    };
    ws.onmessage = onMessage;
    ws.onclose = function (event) {
      if (event.code === 4401) { location.reload(); return; }  // signed out
      setState("closed", "disconnected, retrying");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  function sendStatus() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({type: "status", status: statusSelect.value}));
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) { return; }
    ws.send(JSON.stringify({type: "message", text: text}));
    input.value = "";
    input.focus();
  });

  statusSelect.addEventListener("change", sendStatus);

  // Post the notification form with fetch so the page (and its socket) stays;
  // without JavaScript the form posts normally and the view redirects back.
  notifyForm.addEventListener("submit", function (event) {
    event.preventDefault();
    fetch(notifyForm.action, {
      method: "POST",
      body: new FormData(notifyForm),
      headers: {"Accept": "application/json"},
      credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) {
        append("system", [["text", "Notification failed: HTTP " + response.status]]);
      } else {
        notifyForm.reset();
      }
    });
  });

  connect();
})();
