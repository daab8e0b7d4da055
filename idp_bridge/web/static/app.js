/* idp-bridge pages: comfort only. Every page works without this script (CSP: script-src
   'self', so no inline scripts). What it adds:
   - help page: countdown to the next code, copy button, live refresh of the code, its
     "(until HH:MM)", the advisors active now, the advisor and guest lists, the open access
     requests and the approvals awaiting a second administrator by polling the page's small
     JSON status endpoint every few seconds (a part whose form is being filled in waits);
   - advisor page: polls its status endpoint too; a tenant whose access has ended (removed,
     left elsewhere, expired) loses its "Open" and "Leave" buttons and says so; new tenants,
     invitations or answers to access requests show a note with a reload link;
   - hand-over page: submits the form to the application at once. */
(function () {
  "use strict";

  var POLL_MS = 3000;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  /* Same format as the server's |clock filter: m:ss or h:mm:ss. */
  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
  }

  var note = document.getElementById("live-note");
  function announce(text) {
    if (!note || !text) return;
    note.textContent = "";
    window.setTimeout(function () { note.textContent = text; }, 50);
  }

  /* Copy buttons: hidden without JavaScript, shown here. */
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var label = button.textContent;
    button.hidden = false;
    function done() {
      button.textContent = button.getAttribute("data-copied") || label;
      announce(button.getAttribute("data-copied"));
      window.setTimeout(function () { button.textContent = label; }, 2000);
    }
    function fallback() {
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { if (document.execCommand("copy")) { done(); } } catch (e) { /* text stays selected */ }
    }
    button.addEventListener("click", function () {
      var text = target.textContent.trim();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
      } else {
        fallback();
      }
    });
  });

  /* Help page: countdown and live refresh. */
  var live = document.querySelector("[data-status-url]");
  if (live) {
    var url = live.getAttribute("data-status-url");
    var fingerprint = live.getAttribute("data-fingerprint");
    var expiresAt = Number(live.getAttribute("data-expires-at"));
    var offset = Number(live.getAttribute("data-now")) - Date.now() / 1000;
    var codeElement = document.getElementById("access-code");
    var countdown = document.getElementById("countdown");
    var until = document.getElementById("code-until");
    var busy = false, stopped = false, lastPoll = 0;

    var deferred = false;
    var replace = function (id, html) {
      var box = document.getElementById(id);
      if (!box || html === undefined || box.innerHTML === html) return false;
      var active = document.activeElement;
      if (active && box.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
        /* Someone is typing a note or choosing a duration here: keep it, try next time. */
        deferred = true;
        return false;
      }
      var key = active && box.contains(active) ? active.getAttribute("data-focus-key") : null;
      box.innerHTML = html;
      if (key) {
        var again = box.querySelector('[data-focus-key="' + key + '"]');
        if (again) again.focus();
      }
      return true;
    };

    var poll = function () {
      if (busy || stopped) return;
      busy = true;
      lastPoll = Date.now();
      window.fetch(url, {credentials: "same-origin", cache: "no-store",
                         headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (response.status === 401 || response.status === 403) {
            stopped = true;
            var banner = document.getElementById("signed-out");
            if (banner) banner.hidden = false;
            announce(live.getAttribute("data-text-signed-out"));
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (!data) return;
          offset = data.now - Date.now() / 1000;
          expiresAt = data.expires_at;
          if (until && data.expires_at_text && until.textContent !== data.expires_at_text) {
            until.textContent = data.expires_at_text;
          }
          if (data.fingerprint === fingerprint) return;
          deferred = false;
          if (codeElement && codeElement.textContent !== data.code) {
            codeElement.textContent = data.code;
            codeElement.classList.remove("changed");
            void codeElement.offsetWidth; /* restart the highlight */
            codeElement.classList.add("changed");
            announce(live.getAttribute("data-text-new-code"));
          }
          var changed = replace("temporary-advisors", data.temporary_html);
          changed = replace("permanent-advisors", data.permanent_html) || changed;
          if (data.guests_html !== undefined) changed = replace("guest-users", data.guests_html) || changed;
          if (data.active_html !== undefined && replace("active-now", data.active_html) && !changed) {
            announce(live.getAttribute("data-text-active-changed"));
          }
          if (changed) announce(live.getAttribute("data-text-advisors-changed"));
          var requestsChanged = replace("access-requests", data.requests_html);
          requestsChanged = replace("pending-approvals", data.approvals_html) || requestsChanged;
          if (requestsChanged) announce(live.getAttribute("data-text-requests-changed"));
          /* Take the new state as shown unless a part waits for its form to be left. */
          if (!deferred) fingerprint = data.fingerprint;
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ })
        .then(function () { busy = false; });
    };

    var tick = function () {
      var left = expiresAt - (Date.now() / 1000 + offset);
      if (countdown) countdown.textContent = clock(left);
      var interval = document.hidden ? POLL_MS * 5 : POLL_MS;
      if (left <= 0 || Date.now() - lastPoll >= interval) poll();
    };
    lastPoll = Date.now();
    window.setInterval(tick, 1000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
  }

  /* Advisor page: take back the buttons of tenants whose access has ended. */
  var advisorLive = document.querySelector("[data-advisor-status-url]");
  if (advisorLive) {
    var statusUrl = advisorLive.getAttribute("data-advisor-status-url");
    var advisorBusy = false, advisorStopped = false, advisorLastPoll = Date.now();
    var shownInvitations = Array.prototype.map.call(
      document.querySelectorAll("[data-invitation]"),
      function (row) { return row.getAttribute("data-invitation"); });

    var endRow = function (row) {
      row.classList.add("ended");
      row.removeAttribute("data-membership");
      var actions = row.querySelector("td.actions");
      if (actions) {
        var label = document.createElement("span");
        label.className = "badge ended";
        label.textContent = actions.getAttribute("data-ended-label");
        actions.textContent = "";
        actions.appendChild(label);
      }
      announce(row.getAttribute("data-ended-text"));
    };

    var pollAdvisor = function () {
      if (advisorBusy || advisorStopped) return;
      advisorBusy = true;
      advisorLastPoll = Date.now();
      window.fetch(statusUrl, {credentials: "same-origin", cache: "no-store",
                               headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (response.status === 401 || response.status === 403) {
            advisorStopped = true;
            var banner = document.getElementById("signed-out");
            if (banner) banner.hidden = false;
            announce(advisorLive.getAttribute("data-text-signed-out"));
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (!data) return;
          var liveIds = {}, added = false;
          data.memberships.forEach(function (m) { liveIds[m.id] = true; });
          var rows = document.querySelectorAll("tr[data-membership]");
          var shown = {};
          Array.prototype.forEach.call(rows, function (row) {
            var id = row.getAttribute("data-membership");
            shown[id] = true;
            if (!liveIds[id]) endRow(row);
          });
          data.memberships.forEach(function (m) { if (!shown[m.id]) added = true; });
          data.invitations.forEach(function (id) {
            if (shownInvitations.indexOf(id) < 0) added = true;
          });
          /* An access request answered (approved, denied, expired) or a new one. */
          (data.requests || []).forEach(function (r) {
            var row = document.querySelector('tr[data-request="' + r.id + '"]');
            if (!row || row.getAttribute("data-request-status") !== r.status) added = true;
          });
          var note = document.getElementById("advisor-changed");
          if (added && note && note.hidden) {
            note.hidden = false;
            announce(note.textContent.trim());
          }
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ })
        .then(function () { advisorBusy = false; });
    };

    window.setInterval(function () {
      var interval = document.hidden ? POLL_MS * 5 : POLL_MS;
      if (Date.now() - advisorLastPoll >= interval) pollAdvisor();
    }, 1000);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) pollAdvisor();
    });
  }

  /* Hand-over to the application: submit at once (the button stays for no-script). */
  var handoff = document.getElementById("handoff-form");
  if (handoff) handoff.submit();
})();
