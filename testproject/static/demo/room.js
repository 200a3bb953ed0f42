// Room page: message log, message box, who's here, status select,
// notification form.
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
  var leaving = false;

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

  // Who's here: members[user] = {sessionKey: meta}, one meta per open tab,
  // kept from one presence.state and the presence.diff events after it
  // (Phoenix's shapes). A diff's leaves go first: an update is a leave of the
  // old meta plus a join of the new one.
  var presenceList = document.getElementById("presence");
  var members = {};

  function metaKey(meta) { return meta.node + "/" + meta.session; }

  function applyJoins(joins) {
    Object.keys(joins).forEach(function (user) {
      var tabs = members[user] || (members[user] = {});
      joins[user].metas.forEach(function (meta) { tabs[metaKey(meta)] = meta; });
    });
  }

  function applyLeaves(leaves) {
    Object.keys(leaves).forEach(function (user) {
      var tabs = members[user];
      if (!tabs) { return; }
      leaves[user].metas.forEach(function (meta) { delete tabs[metaKey(meta)]; });
      if (Object.keys(tabs).length === 0) { delete members[user]; }
    });
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function renderPresence() {
    var me = document.getElementById("current-user").textContent;
    presenceList.textContent = "";
    Object.keys(members).sort().forEach(function (user) {
      var metas = Object.keys(members[user]).map(function (k) { return members[user][k]; });
      // With several tabs, the status set last wins.
      var latest = metas.reduce(function (a, b) { return (b.since || 0) > (a.since || 0) ? b : a; });
      var servers = metas.map(function (m) { return m.server; })
        .filter(function (v, i, all) { return all.indexOf(v) === i; }).sort();
      var li = el("li", "member");
      li.dataset.user = user;
      li.dataset.status = latest.status;
      li.appendChild(el("span", "dot status-" + latest.status));
      li.appendChild(el("span", "name", user + (user === me ? " (you)" : "")));
      var tabs = el("span", "tabs", metas.length === 1 ? "1 tab" : metas.length + " tabs");
      tabs.dataset.tabs = metas.length;
      tabs.title = metas.length === 1 ? "1 open tab" : metas.length + " open tabs";
      li.appendChild(tabs);
      li.appendChild(el("span", "member-status", latest.status));
      var where = el("span", "servers");
      servers.forEach(function (server) { where.appendChild(el("span", "", "on " + server)); });
      li.appendChild(where);
      presenceList.appendChild(li);
    });
    if (!presenceList.firstChild) {
      presenceList.appendChild(el("li", "placeholder muted", "Nobody here."));
    }
  }

  function onPresence(msg) {
    if (msg.type === "presence.state") {
      members = {};
      applyJoins(msg.state);
    } else {
      applyLeaves(msg.leaves);
      applyJoins(msg.joins);
    }
    renderPresence();
  }

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
    } else if (msg.type === "presence.state" || msg.type === "presence.diff") {
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
      if (leaving) { return; }
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

  // Leaving the page (or entering the back/forward cache) closes the socket
  // at once, so everyone sees this tab go; coming back from the cache
  // connects again.
  window.addEventListener("pagehide", function () {
    leaving = true;
    if (ws) { ws.close(1000, "page hidden"); }
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { leaving = false; connect(); }
  });

  connect();
})();
