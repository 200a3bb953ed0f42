// Lobby: one WebSocket for live member counts per room. The server sends
// {"type": "presence", "counts": {slug: users}, "connections": {slug: n}}
// on connect and after every presence diff.
(function () {
  "use strict";
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var delay = 500;

  function render(counts, connections) {
    document.querySelectorAll("[data-presence-count]").forEach(function (el) {
      var slug = el.dataset.presenceCount;
      var n = counts[slug];
      var tabs = (connections || {})[slug];
      el.dataset.count = n === undefined ? "" : n;
      el.textContent = n === undefined ? "\u2013" :
        n + " online" + (tabs && tabs !== n ? " (" + tabs + " tabs)" : "");
      el.classList.toggle("busy", !!n);
    });
  }

  function connect() {
    var ws = new WebSocket(scheme + location.host + "/ws/lobby/");
    ws.onopen = function () { delay = 500; };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "presence") { render(msg.counts, msg.connections); }
    };
    ws.onclose = function () {
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
