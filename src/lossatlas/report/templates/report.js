(function () {
  var figs = JSON.parse(document.getElementById("report-figures").textContent);
  var cfg = {responsive: true, displaylogo: false};
  Object.keys(figs).forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { Plotly.newPlot(el, figs[id].data, figs[id].layout, cfg); }
  });
  var tree = document.getElementById("fig-merge-tree");
  var map = document.getElementById("fig-landscape");
  var note = document.getElementById("basin-selection");
  var chosen = null;
  function highlight(basin) {
    if (!map || !map.data) { return; }
    var idx = [], sel = [];
    map.data.forEach(function (tr, k) {
      if (!tr.meta || tr.meta.role !== "models") { return; }
      idx.push(k);
      if (basin === null) { sel.push(null); return; }
      var pts = [];
      (tr.customdata || []).forEach(function (c, i) { if (c[1] === basin) { pts.push(i); } });
      sel.push(pts);
    });
    if (idx.length) { Plotly.restyle(map, {selectedpoints: sel}, idx); }
    if (note) {
      note.textContent = basin === null ? "" :
        "Highlighted: the models of basin " + basin + " (click the leaf again to clear).";
    }
  }
  if (tree && map) {
    tree.on("plotly_click", function (ev) {
      var p = ev.points && ev.points[0];
      if (!p || p.customdata === undefined || p.customdata === null) { return; }
      var b = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      chosen = (chosen === b) ? null : b;
      highlight(chosen);
    });
  }
  window.lossatlasHighlightBasin = highlight;
})();
