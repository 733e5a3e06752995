// Copy buttons of the policy page: shown only when the clipboard is available; the <pre> text stays selectable.
(function () {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    var pre = document.getElementById(button.getAttribute("data-copy"));
    if (!pre) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(pre.textContent).then(function () {
        button.textContent = "Copied";
      }, function () {
        button.textContent = "Copy failed: select the text";
      });
    });
  });
})();

// The backfills page: while a backfill runs, its progress table is fetched again every 2 seconds and put in place
// of the old one; the rest of the page (the form being filled in) is left alone.
(function () {
  function refresh() {
    var jobs = document.getElementById("jobs");
    var url = jobs && jobs.getAttribute("data-refresh");
    if (!url) return;
    fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (response) {
      if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      var next = new DOMParser().parseFromString(html, "text/html").getElementById("jobs");
      if (next) jobs.replaceWith(document.importNode(next, true));
      setTimeout(refresh, 2000);
    }).catch(function () {
      setTimeout(refresh, 5000);
    });
  }
  setTimeout(refresh, 2000);
})();
