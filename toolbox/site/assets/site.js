// The site's only script (ours, no library): sort a table by clicking a column header, filter its rows
// by text and by the values of a column. Every table is complete without it (scripts off: all rows shown).
(function () {
  "use strict";

  function cellValue(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null) raw = cell.textContent.trim();
    var n = Number(raw);
    return raw !== "" && !isNaN(n) ? n : raw.toLowerCase();
  }

  function compare(a, b) {
    if (typeof a === typeof b) return a < b ? -1 : a > b ? 1 : 0;
    return typeof a === "number" ? -1 : 1; // numbers before words
  }

  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) { return dir * compare(cellValue(r1.cells[col]), cellValue(r2.cells[col])); });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }

  function applyFilters(table, bar) {
    var text = (bar.querySelector("input[type=search]") || {}).value || "";
    text = text.toLowerCase();
    var facets = bar.querySelectorAll("select");
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var ok = !text || row.textContent.toLowerCase().indexOf(text) >= 0;
      facets.forEach(function (sel) {
        if (sel.value && row.cells[Number(sel.getAttribute("data-col"))].textContent.trim() !== sel.value) ok = false;
      });
      row.hidden = !ok;
      if (ok) shown += 1;
    });
    var count = bar.querySelector(".count");
    if (count) count.textContent = shown + " of " + table.tBodies[0].rows.length + " shown";
  }

  function facetSelect(table, th, col, bar) {
    var values = {};
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) { values[row.cells[col].textContent.trim()] = 1; });
    var sel = document.createElement("select");
    sel.setAttribute("data-col", String(col));
    sel.setAttribute("aria-label", "filter by " + th.textContent.trim());
    sel.className = "facet";
    sel.appendChild(new Option("every " + th.textContent.trim(), ""));
    Object.keys(values).sort().forEach(function (v) { sel.appendChild(new Option(v, v)); });
    sel.addEventListener("change", function () { applyFilters(table, bar); });
    return sel;
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headers, function (th, col) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortTable(table, col, th); });
    });
    var bar = table.id ? document.querySelector("[data-filter-for='" + table.id + "']") : null;
    if (!bar) return;
    bar.hidden = false;
    Array.prototype.forEach.call(headers, function (th, col) {
      if (th.hasAttribute("data-facet")) bar.appendChild(facetSelect(table, th, col, bar));
    });
    var input = bar.querySelector("input[type=search]");
    if (input) input.addEventListener("input", function () { applyFilters(table, bar); });
    applyFilters(table, bar);
  });
})();
