// Dashboard charts (Chart.js, served from static/chatnexus/vendor). Data comes from
// the page itself (json_script "series-data"), so there is no extra request.
(function () {
  const el = document.getElementById("series-data");
  if (!el || typeof Chart === "undefined") return;
  const series = JSON.parse(el.textContent);
  const labels = series.map((d) => d.day.slice(5));
  // The charts fill their box (.chart in app.css: a fixed height), so a phone-wide one stays readable.
  const base = { animation: false, maintainAspectRatio: false };
  new Chart(document.getElementById("chart-volume"), {
    type: "bar",
    data: {
      labels,
      datasets: [
        { label: "Conversations", data: series.map((d) => d.conversations), backgroundColor: "#4f46e5" },
        { label: "Inbound messages", data: series.map((d) => d.inbound), backgroundColor: "#a5b4fc" },
        { label: "Outbound messages", data: series.map((d) => d.outbound), backgroundColor: "#c7d2fe" },
      ],
    },
    options: { ...base, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  new Chart(document.getElementById("chart-latency"), {
    type: "line",
    data: {
      labels,
      datasets: [{ label: "Median latency (s)", data: series.map((d) => d.latency_median_s), borderColor: "#4f46e5", spanGaps: true }],
    },
    options: { ...base, scales: { y: { beginAtZero: true } } },
  });
  window.chatnexusChartsReady = true;
})();
