// Draws the dashboard's charts with Chart.js from the JSON the server embedded.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var colors = ["#1f3a5f", "#2e7d32", "#c77700", "#8e24aa", "#00838f", "#b3261e"];
  var options = { responsive: true, maintainAspectRatio: false, animation: false };
  window.parleyCharts = [];

  function days(rows) {
    var seen = {};
    rows.forEach(function (row) { seen[row.day] = true; });
    return Object.keys(seen).sort();
  }
  function draw(id, config) {
    var canvas = typeof id === "string" ? document.getElementById(id) : id;
    if (canvas) { window.parleyCharts.push(new Chart(canvas, config)); }
  }

  var labels = days(data.messages_per_day);
  var series = {};
  data.messages_per_day.forEach(function (row) {
    var key = row.direction + " · " + row.channel;
    series[key] = series[key] || {};
    series[key][row.day] = row.messages;
  });
  draw("chart-messages", {
    type: "bar",
    data: {
      labels: labels,
      datasets: Object.keys(series).sort().map(function (key, i) {
        return { label: key, backgroundColor: colors[i % colors.length],
                 data: labels.map(function (day) { return series[key][day] || 0; }) };
      })
    },
    options: Object.assign({ scales: { x: { stacked: true }, y: { stacked: true } } }, options)
  });
  draw("chart-active", {
    type: "line",
    data: { labels: data.active_contacts_per_day.map(function (r) { return r.day; }),
            datasets: [{ label: "contacts", borderColor: colors[1],
                         data: data.active_contacts_per_day.map(function (r) { return r.contacts; }) }] },
    options: options
  });
  draw("chart-tokens", {
    type: "bar",
    data: { labels: data.tokens_per_day.map(function (r) { return r.day; }),
            datasets: [
              { label: "tokens", yAxisID: "y", backgroundColor: colors[0],
                data: data.tokens_per_day.map(function (r) { return r.tokens; }) },
              { label: "cost (USD)", yAxisID: "cost", type: "line", borderColor: colors[2],
                data: data.tokens_per_day.map(function (r) { return r.cost_usd; }) }] },
    options: Object.assign({ scales: { y: { position: "left" }, cost: { position: "right" } } }, options)
  });
  draw("chart-failures", {
    type: "bar",
    data: { labels: data.delivery_failures_per_day.map(function (r) { return r.day; }),
            datasets: [{ label: "failed or undelivered", backgroundColor: colors[5],
                         data: data.delivery_failures_per_day.map(function (r) { return r.failures; }) }] },
    options: options
  });
  document.querySelectorAll(".chart-funnel").forEach(function (canvas) {
    var steps = data.funnels[canvas.dataset.flow] || [];
    draw(canvas, {
      type: "bar",
      data: { labels: steps.map(function (s) { return s.step; }),
              datasets: [{ label: "executions that reached the step", backgroundColor: colors[4],
                           data: steps.map(function (s) { return s.executions; }) }] },
      options: Object.assign({ indexAxis: "y" }, options)
    });
  });
})();
