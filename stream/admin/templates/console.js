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
