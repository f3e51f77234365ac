// Keyboard shortcuts for the review page: 1-5 select a candidate, s/d/c decide on it,
// n registers a new individual, u undoes. No framework; forms do the real work.
(function () {
  "use strict";
  var candidates = Array.prototype.slice.call(document.querySelectorAll(".candidate"));
  var selected = candidates.length ? 0 : -1;
  function show() {
    candidates.forEach(function (li, i) { li.classList.toggle("selected", i === selected); });
  }
  function press(selector, root) {
    var button = (root || document).querySelector(selector);
    if (button) { button.click(); }
  }
  show();
  document.addEventListener("keydown", function (event) {
    var tag = event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    var key = event.key;
    if (key >= "1" && key <= "5" && Number(key) <= candidates.length) {
      selected = Number(key) - 1;
      show();
      return;
    }
    var current = selected >= 0 ? candidates[selected] : null;
    if (key === "s" && current) { press("button.same", current); }
    else if (key === "d" && current) { press("button.different", current); }
    else if (key === "c" && current) { press("button.cannot", current); }
    else if (key === "n") { press("#new-individual"); }
    else if (key === "u") { press("#undo"); }
  });
})();
