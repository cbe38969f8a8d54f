/* ChatNexus builder: tabs, the live system-prompt preview
 * and the live test chat (websocket ws/preview/<bot_id>/).
 *
 * Model output is only ever put on the page with textContent, never innerHTML.
 * No build step, no dependencies.
 */
(function () {
  "use strict";

  var root = document.getElementById("builder");
  if (!root) return;

  // ---------------------------------------------------------------------------
  // Tabs: one panel at a time; the hash (#persona, #knowledge, ...) picks it.

  var settingsForm = document.getElementById("bot-settings");
  var tabLinks = root.querySelectorAll(".tabs a[data-tab]");
  var panels = root.querySelectorAll("[data-panel]");

  function showTab(name) {
    var known = Array.prototype.some.call(tabLinks, function (a) { return a.dataset.tab === name; });
    if (!known) name = "persona";
    tabLinks.forEach(function (a) {
      var on = a.dataset.tab === name;
      a.classList.toggle("active", on);
      a.setAttribute("aria-selected", on ? "true" : "false");
    });
    panels.forEach(function (p) { p.hidden = p.dataset.panel !== name; });
    settingsForm.hidden = name === "knowledge" || name === "versions";
    root.querySelectorAll(".tab-field").forEach(function (input) { input.value = name; });
    root.dataset.activeTab = name;
  }

  document.body.classList.add("js-tabs");
  tabLinks.forEach(function (a) {
    a.addEventListener("click", function (event) {
      event.preventDefault();
      history.replaceState(null, "", "#" + a.dataset.tab);
      showTab(a.dataset.tab);
    });
  });
  // A form that failed validation opens on the tab of its first marked field (else the server's tab),
  // so the field to fix is in sight; otherwise the URL's hash wins.
  var firstError = root.querySelector(".has-error");
  var errorPanel = firstError && firstError.closest("[data-panel]");
  var hasErrors = firstError || root.querySelector(".form-errors");
  showTab(errorPanel ? errorPanel.dataset.panel : hasErrors ? root.dataset.activeTab : (location.hash.slice(1) || root.dataset.activeTab));
  window.addEventListener("hashchange", function () { showTab(location.hash.slice(1)); });  // a link to #versions

  // ---------------------------------------------------------------------------
  // Unsaved settings: leaving the page asks first, and so does Publish (it publishes the saved
  // draft, not the form). A form sent back with errors holds unsaved edits too.

  var dirty = !!root.querySelector(".form-errors");
  settingsForm.addEventListener("input", function () { dirty = true; });
  settingsForm.addEventListener("change", function () { dirty = true; });
  settingsForm.addEventListener("submit", function () { dirty = false; });
  window.addEventListener("beforeunload", function (event) {
    if (!dirty) return;
    event.preventDefault();
    event.returnValue = "";  // older browsers ask only when this is set
  });
  document.getElementById("publish-form").addEventListener("submit", function (event) {
    if (!dirty) return;
    if (window.confirm("Publish the last saved draft? Your unsaved changes will be lost — save them first.")) dirty = false;
    else event.preventDefault();
  });

  // ---------------------------------------------------------------------------
  // System prompt preview: debounced POST of the unsaved form to a JSON endpoint.

  var promptBox = document.getElementById("prompt-preview");
  var promptStatus = document.getElementById("prompt-status");
  var sampleQuestion = document.getElementById("sample-question");
  var avatar = document.getElementById("avatar");
  var previewTimer = null;
  var previewSeq = 0;

  function schedulePreview() {
    clearTimeout(previewTimer);
    promptStatus.textContent = "…";
    previewTimer = setTimeout(refreshPreview, 300);
  }

  function refreshPreview() {
    var seq = ++previewSeq;
    var data = new FormData(settingsForm);
    data.append("sample_question", sampleQuestion.value);
    fetch(root.dataset.previewUrl, { method: "POST", body: data, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (body) {
        if (seq !== previewSeq) return; // a newer request is on its way
        promptBox.textContent = body.prompt;
        var errors = Object.keys(body.errors || {});
        promptStatus.textContent = errors.length ? "ignoring invalid: " + errors.join(", ") : "updated";
        promptBox.dataset.updates = String(Number(promptBox.dataset.updates || 0) + 1);
      })
      .catch(function (err) {
        if (seq === previewSeq) promptStatus.textContent = "preview failed (" + err.message + ")";
      });
  }

  settingsForm.addEventListener("input", schedulePreview);
  settingsForm.addEventListener("change", schedulePreview);
  sampleQuestion.addEventListener("input", schedulePreview);

  var nameInput = settingsForm.querySelector("[name=name]");
  var colorInput = settingsForm.querySelector("[name=avatar_color]");
  function refreshAvatar() {
    avatar.style.background = colorInput.value;
    avatar.textContent = (nameInput.value.trim()[0] || "?").toUpperCase();
  }
  nameInput.addEventListener("input", refreshAvatar);
  colorInput.addEventListener("input", refreshAvatar);

  // ---------------------------------------------------------------------------
  // Live test chat

  var log = document.getElementById("chat-log");
  var chatForm = document.getElementById("chat-form");
  var chatInput = document.getElementById("chat-input");
  var chatStatus = document.getElementById("chat-status");
  var chatError = document.getElementById("chat-error");
  var greeting = log.querySelector(".greeting");
  var chips = document.getElementById("chat-chips"); // the draft's suggested questions, as in the widget
  var bubbles = {}; // reply_to (or "m" + message id) -> bot bubble
  var socket = null;
  var clientSeq = 0;
  var refused = false;
  var readyBefore = false; // a later "ready" is a new socket, and the server's new socket is a new conversation

  function setStatus(state, text) {
    chatStatus.dataset.state = state;
    chatStatus.textContent = text;
  }

  function showError(text) {
    chatError.textContent = text;
    chatError.hidden = !text;
  }

  function addBubble(kind) {
    var el = document.createElement("div");
    el.className = "msg " + kind;
    var text = document.createElement("div");
    text.className = "text";
    el.appendChild(text);
    log.appendChild(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function botBubble(key) {
    var el = bubbles[key];
    if (!el) {
      el = addBubble("bot");
      el.dataset.replyTo = key;
      el.dataset.deltas = "0";
      el.dataset.state = "waiting";
      bubbles[key] = el;
    }
    return el;
  }

  function fmt(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
  }

  function renderStats(el, stats) {
    var old = el.querySelector(".stats");
    if (old) old.remove();
    if (!stats) return;
    var rows = [
      ["tokens", stats.new_tokens],
      ["tokens/s", fmt(stats.tokens_per_s, 1)],
      ["acceptance", typeof stats.acceptance_rate === "number" ? Math.round(stats.acceptance_rate * 100) + "%" : "–"],
      ["tokens/forward", fmt(stats.mean_tokens_per_forward, 2)],
      ["first token", typeof stats.ttft_s === "number" ? Math.round(stats.ttft_s * 1000) + " ms" : "–"],
      ["drafter", stats.drafter || "–"],
      ["precision", stats.precision || "–"],
      ["prompt reused", typeof stats.prefix_reused === "number" && stats.prompt_tokens ? stats.prefix_reused + " / " + stats.prompt_tokens + " tokens" : "–"],
    ];
    var dl = document.createElement("dl");
    dl.className = "stats";
    rows.forEach(function (row) {
      var item = document.createElement("div");
      var dt = document.createElement("dt");
      var dd = document.createElement("dd");
      dt.textContent = row[0];
      dd.textContent = row[1] === undefined || row[1] === null ? "–" : String(row[1]);
      dd.dataset.stat = row[0];
      item.appendChild(dt);
      item.appendChild(dd);
      dl.appendChild(item);
    });
    el.appendChild(dl);
  }

  function finish(el, message) {
    el.querySelector(".text").textContent = message.text; // the stored reply is the truth
    el.dataset.state = "done";
    el.dataset.messageId = String(message.id);
    el.classList.remove("streaming");
    el.classList.toggle("system", message.sender === "system");
    el.classList.toggle("agent", message.sender === "agent");
    if (message.sender === "bot") renderStats(el, message.stats);
    if (message.sender === "system") noteHandoff(el);
    log.scrollTop = log.scrollHeight;
  }

  // The bot's handoff message (a trigger phrase, or a reply the model could not give) is the only
  // system message. A test chat has no team and no inbox: say what a real chat would do, and that
  // the server gives the conversation back to the bot with the next message.
  function noteHandoff(el) {
    var next = el.nextElementSibling;
    if (next && next.classList.contains("handoff-note")) return;
    var note = document.createElement("p");
    note.className = "notice handoff-note";
    note.setAttribute("role", "status");
    note.textContent = "In a real chat your team would now have this conversation. Here the bot answers your next message, so you can keep testing.";
    el.parentNode.insertBefore(note, next);
  }

  function startOver() {
    bubbles = {};
    log.textContent = "";
    if (greeting) log.appendChild(greeting);
    if (chips) log.appendChild(chips);
    showError("");
  }

  function handle(event) {
    switch (event.event) {
      case "ready":
        setStatus("open", "connected");
        if (readyBefore && log.querySelector(".msg.user")) {
          // what was said before went with the old socket (a streaming reply will never finish): start over
          startOver();
          var notice = document.createElement("p");
          notice.className = "notice";
          notice.setAttribute("role", "status");
          notice.textContent = "Connection lost — this is a new test conversation.";
          log.insertBefore(notice, log.firstChild);
        }
        readyBefore = true;
        break;
      case "reply.start": {
        var started = botBubble(event.reply_to);
        started.dataset.state = "streaming";
        started.classList.add("streaming");
        break;
      }
      case "reply.delta": {
        var el = botBubble(event.reply_to);
        if (el.dataset.state === "done") break; // the stored text already arrived
        el.dataset.state = "streaming";
        el.classList.add("streaming");
        el.querySelector(".text").textContent += event.delta;
        el.dataset.deltas = String(Number(el.dataset.deltas) + 1);
        log.scrollTop = log.scrollHeight;
        break;
      }
      case "reply.done":
        finish(botBubble(event.reply_to), event.message);
        break;
      case "reply.error": {
        var failed = botBubble(event.reply_to);
        failed.dataset.state = "failed";
        failed.classList.remove("streaming");
        failed.classList.add("failed");
        failed.querySelector(".text").textContent = "The bot could not answer this one.";
        break;
      }
      case "message": {
        var m = event.message;
        if (!m || m.direction === "in") break; // our own message is already on the page
        finish(botBubble(m.reply_to || "m" + m.id), m);
        break;
      }
      case "accepted": {
        var mine = log.querySelector('[data-client-id="' + event.client_id + '"]');
        if (mine) mine.dataset.messageId = String(event.message_id);
        break;
      }
      case "reset":
        startOver();
        break;
      case "error":
        showError(event.error);
        break;
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setStatus("connecting", "connecting…");
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.addEventListener("message", function (e) {
      try {
        handle(JSON.parse(e.data));
      } catch (err) {
        showError("Bad event from server: " + err.message);
      }
    });
    socket.addEventListener("close", function (e) {
      if (e.code === 4403) {
        refused = true;
        setStatus("refused", "not allowed");
        showError("You can't test this bot (sign in as an owner or admin of its organisation).");
        return;
      }
      setStatus("closed", "reconnecting…");
      setTimeout(connect, 2000);
    });
  }

  chatForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = chatInput.value.trim();
    if (!text) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError(refused ? "Not allowed." : "Not connected yet — try again in a moment.");
      return;
    }
    showError("");
    if (chips && chips.parentNode) chips.parentNode.removeChild(chips); // the conversation has begun
    var id = "c" + Date.now().toString(36) + "-" + ++clientSeq;
    var mine = addBubble("user");
    mine.dataset.clientId = id;
    mine.querySelector(".text").textContent = text;
    socket.send(JSON.stringify({ type: "message", id: id, text: text }));
    chatInput.value = "";
  });

  if (chips) chips.addEventListener("click", function (event) {
    var chip = event.target.closest("button.chip");
    if (!chip) return;
    chatInput.value = chip.textContent;
    chatForm.requestSubmit();
  });

  document.getElementById("chat-reset").addEventListener("click", function () {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "reset" }));
  });

  connect();
})();
