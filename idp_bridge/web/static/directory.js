// Type-ahead for choosing a person of the directory (support: permanent advisors; tenant
// admins: guest invitations). Without JavaScript the search button does the same with a
// page load. The list holds radio buttons whose value is the person's subject; names are
// set as text, never as HTML.
(function () {
  "use strict";

  function render(list, people, state) {
    var field = list.getAttribute("data-field");
    var checked = list.querySelector("input[type=radio]:checked");
    var keep = checked ? checked.value : null;
    var legend = list.querySelector("legend");
    while (list.lastChild && list.lastChild !== legend) list.removeChild(list.lastChild);
    if (legend && list.firstChild !== legend) list.insertBefore(legend, list.firstChild);
    if (state) {
      var p = document.createElement("p");
      p.className = state === "failed" ? "error" : "hint";
      p.textContent = list.getAttribute("data-" + state) || "";
      list.appendChild(p);
      return;
    }
    if (!people.length) {
      var empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = list.getAttribute("data-empty") || "";
      list.appendChild(empty);
      return;
    }
    people.forEach(function (person) {
      var label = document.createElement("label");
      label.className = "choice";
      var input = document.createElement("input");
      input.type = "radio";
      input.name = field;
      input.value = person.subject;
      if (person.subject === keep ||
          (list.hasAttribute("data-autocheck") && people.length === 1 && !keep)) input.checked = true;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + person.name +
        (person.detail ? " · " + person.detail : "")));
      list.appendChild(label);
    });
  }

  function attach(input) {
    var list = document.getElementById(input.getAttribute("data-directory-results"));
    var url = input.getAttribute("data-directory-url");
    if (!list || !url) return;
    var timer = null, latest = 0;
    input.addEventListener("input", function () {
      document.querySelectorAll('[data-mirror="' + input.id + '"]').forEach(function (m) {
        m.value = input.value;
      });
      clearTimeout(timer);
      var text = input.value.trim();
      if (text.length < 2) { render(list, [], text ? "short" : "idle"); return; }
      timer = setTimeout(function () {
        var ticket = ++latest;
        fetch(url + "?q=" + encodeURIComponent(text), {
          credentials: "same-origin", headers: {"Accept": "application/json"}
        }).then(function (response) {
          if (!response.ok) throw new Error(String(response.status));
          return response.json();
        }).then(function (body) {
          if (ticket === latest) render(list, body.people || [], null);
        }).catch(function () {
          if (ticket === latest) render(list, [], "failed");
        });
      }, 250);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-directory-url]").forEach(attach);
  });
})();
