// Draws the dashboard's charts with Chart.js from the JSON the server embedded.
// Every chart gets options of its own (Chart.js fills in the options object it is
// given: a shared one carried one chart's scales into the next).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var colors = ["#0f766e", "#2563eb", "#c2410c", "#7c3aed", "#0891b2", "#b91c1c", "#4d7c0f", "#a16207"];
  window.parleyCharts = [];
  window.parleyChartsById = {};

  /** Fresh options for one chart: counts on integer axes from zero. */
  function options(extra) {
    var base = {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        x: { grid: { display: false } },
        y: { beginAtZero: true, ticks: { precision: 0 } }
      }
    };
    return Object.assign(base, extra || {});
  }

  /** Every day of the range, so that a quiet day shows as zero rather than missing. */
  function rangeDays() {
    var days = [];
    var day = new Date(data.since + "T00:00:00Z");
    var last = new Date(data.until + "T00:00:00Z");
    while (day <= last && days.length < 400) {
      days.push(day.toISOString().slice(0, 10));
      day = new Date(day.getTime() + 86400000);
    }
    return days;
  }
  var days = rangeDays();
  function shortDay(day) { return day.slice(5); }
  function perDay(rows, field) {
    var found = {};
    rows.forEach(function (row) { found[row.day] = (found[row.day] || 0) + row[field]; });
    return days.map(function (day) { return found[day] || 0; });
  }

  function draw(key, canvas, config) {
    if (!canvas) { return; }
    var chart = new Chart(canvas, config);
    window.parleyCharts.push(chart);
    window.parleyChartsById[key] = chart;
  }

  // Messages per day, stacked by direction and channel.
  var series = {};
  data.messages_per_day.forEach(function (row) {
    var key = row.direction + " · " + (row.channel === "whatsapp" ? "WhatsApp" : "SMS");
    series[key] = series[key] || {};
    series[key][row.day] = row.messages;
  });
  draw("messages", document.getElementById("chart-messages"), {
    type: "bar",
    data: {
      labels: days.map(shortDay),
      datasets: Object.keys(series).sort().map(function (key, i) {
        return { label: key, backgroundColor: colors[i % colors.length],
                 data: days.map(function (day) { return series[key][day] || 0; }) };
      })
    },
    options: options({ scales: { x: { stacked: true, grid: { display: false } },
                                 y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } })
  });

  draw("active", document.getElementById("chart-active"), {
    type: "line",
    data: { labels: days.map(shortDay),
            datasets: [{ label: "contacts who wrote", borderColor: colors[0], backgroundColor: colors[0],
                         pointRadius: 2, tension: 0.2,
                         data: perDay(data.active_contacts_per_day, "contacts") }] },
    options: options()
  });

  draw("tokens", document.getElementById("chart-tokens"), {
    type: "bar",
    data: { labels: days.map(shortDay),
            datasets: [
              { label: "tokens", yAxisID: "y", backgroundColor: colors[1],
                data: perDay(data.tokens_per_day, "tokens") },
              { label: "estimated cost (USD)", yAxisID: "cost", type: "line", borderColor: colors[2],
                backgroundColor: colors[2], pointRadius: 2,
                data: perDay(data.tokens_per_day, "cost_usd") }] },
    options: options({ scales: {
      x: { grid: { display: false } },
      y: { position: "left", beginAtZero: true, ticks: { precision: 0 } },
      cost: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } }
    } })
  });

  draw("failures", document.getElementById("chart-failures"), {
    type: "bar",
    data: { labels: days.map(shortDay),
            datasets: [{ label: "failed or undelivered", backgroundColor: colors[5],
                         data: perDay(data.delivery_failures_per_day, "failures") }] },
    options: options()
  });

  // Funnels: one horizontal bar per step, one stacked colour per flow version.
  document.querySelectorAll(".chart-funnel").forEach(function (canvas) {
    var funnel = data.funnels.filter(function (f) { return f.flow === canvas.dataset.flow; })[0];
    if (!funnel) { return; }
    var versions = funnel.versions.length ? funnel.versions : [{ version: "?", started: 0 }];
    draw("funnel:" + funnel.flow, canvas, {
      type: "bar",
      data: {
        labels: funnel.steps.map(function (s) { return s.step; }),
        datasets: versions.map(function (v, i) {
          var current = v.version === funnel.current_version ? " (current)" : "";
          return { label: "version " + v.version.slice(0, 7) + current,
                   backgroundColor: colors[i % colors.length],
                   data: funnel.steps.map(function (s) { return s.per_version[v.version] || 0; }) };
        })
      },
      options: options({
        indexAxis: "y",
        scales: {
          x: { stacked: true, beginAtZero: true, ticks: { precision: 0 },
               title: { display: true, text: "executions that reached the step" } },
          y: { stacked: true, grid: { display: false } }
        }
      })
    });
  });
})();
