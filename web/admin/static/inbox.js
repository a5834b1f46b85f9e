// The inbox's chat: poll every two seconds and redraw the lines (a message
// already shown may have moved on: sent, delivered, failed), no reload.
(function () {
  "use strict";
  var box = document.getElementById("transcript");
  if (!box) { return; }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }  // what a contact types is text, never markup
    return node;
  }

  function line(entry) {
    var time = element("time", "", entry.time);
    time.dateTime = entry.at;
    if (entry.side === "event") {
      var event = element("li", "chat-event", entry.text + " · ");
      event.dataset.entry = entry.id;
      event.appendChild(time);
      return event;
    }
    var classes = "bubble " + entry.side;
    if (entry.author_kind === "agent") { classes += " agent"; }
    if (entry.status_class === "failed") { classes += " failed"; }
    var node = element("li", classes);
    node.dataset.entry = entry.id;
    node.dataset.status = entry.status;
    node.appendChild(element("span", "author", entry.author));
    node.appendChild(element("span", "body text", entry.text));
    var meta = element("span", "meta");
    meta.appendChild(time);
    if (entry.status_label) {
      meta.appendChild(element("span", "badge " + entry.status_class + " status", entry.status_label));
    }
    node.appendChild(meta);
    if (entry.error) { node.appendChild(element("span", "error", entry.error)); }
    return node;
  }

  function signature(lines) {
    return lines.map(function (entry) { return entry.id + ":" + entry.status; }).join(",");
  }

  var shown = signature(Array.prototype.map.call(box.querySelectorAll("[data-entry]"), function (node) {
    return { id: node.dataset.entry, status: node.dataset.status || "" };
  }));

  function poll() {
    fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        var next = signature(data.lines);
        if (next !== shown) {
          var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
          box.replaceChildren.apply(box, data.lines.map(line));
          shown = next;
          if (atBottom) { box.scrollTop = box.scrollHeight; }
        }
        var holder = document.getElementById("controlled-by");
        if (holder) { holder.textContent = data.holder; }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }
  box.scrollTop = box.scrollHeight;
  window.parleyInboxPoll = poll;
  setInterval(poll, 2000);
})();
