// The inbox's transcript: poll for new lines every few seconds, no reload.
(function () {
  "use strict";
  var box = document.getElementById("transcript");
  if (!box) { return; }
  var seen = {};
  box.querySelectorAll("[data-entry]").forEach(function (node) { seen[node.dataset.entry] = true; });

  function line(entry) {
    var node = document.createElement("div");
    node.className = "message " + entry.direction;
    node.dataset.entry = entry.id;
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = entry.author + " · " + entry.created_at.replace("T", " ").slice(0, 19) +
      (entry.status ? " · " + entry.status : "");
    var text = document.createElement("div");
    text.className = "text";
    text.textContent = entry.text;  // what a contact types is text, never markup
    node.appendChild(meta);
    node.appendChild(text);
    return node;
  }

  function poll() {
    fetch(box.dataset.url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        data.entries.forEach(function (entry) {
          if (!seen[entry.id]) { seen[entry.id] = true; box.appendChild(line(entry)); }
        });
        var holder = document.getElementById("controlled-by");
        if (holder) { holder.textContent = data.controlled_by; }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }
  window.parleyInboxPoll = poll;
  setInterval(poll, 2000);
})();
