// The console's only script (compiled into the binary): live counts. An element with
// data-refresh is reloaded from that URL every few seconds while the "live" box is ticked;
// the choice is remembered in this browser. The fragment is server-rendered and escaped.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (box) {
    box.checked = localStorage.getItem("rw-live") !== "off";
    box.addEventListener("change", function () {
      localStorage.setItem("rw-live", box.checked ? "on" : "off");
    });
  }
  function refresh() {
    if (box && !box.checked) return;
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          el.replaceChildren.apply(el, Array.from(doc.body.childNodes));
        })
        .catch(function () {});
    });
  }
  setInterval(refresh, 5000);
})();
