// Lobby: one WebSocket for live member counts per room.
// PRESENCE HOOK (issue 9, second part): channels_nats.presence makes the
// server send {"type": "presence", "counts": {slug: n}}; this renders it.
(function () {
  "use strict";
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var delay = 500;

  function render(counts) {
    document.querySelectorAll("[data-presence-count]").forEach(function (el) {
      var n = counts[el.dataset.presenceCount];
      el.textContent = n === undefined ? "\u2013" : n + " online";
    });
  }

  function connect() {
    var ws = new WebSocket(scheme + location.host + "/ws/lobby/");
    ws.onopen = function () { delay = 500; };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "presence") { render(msg.counts); }
    };
    ws.onclose = function () {
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
