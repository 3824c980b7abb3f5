// The People page's only script: progressive touches, never needed to use the page.
// - every <time> shows the reader's local time on hover;
// - pressing "/" focuses the first search box.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!Number.isNaN(d.getTime())) t.title = d.toLocaleString();
  }
  document.addEventListener("keydown", (e) => {
    const tag = (e.target && e.target.tagName) || "";
    if (e.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(tag)) {
      const box = document.querySelector("input[type=search], input[name=where]");
      if (box) { e.preventDefault(); box.focus(); }
    }
  });
});
