// Inbox thread: poll the conversation's JSON every few seconds for the messages changed since the page
// last asked (new ones, a delivery status, a reply's state, a rating), and show the conversation's
// state as it is now: another agent may have taken it over, closed or assigned it.
(function () {
  const thread = document.getElementById("thread");
  if (!thread) return;
  const list = document.getElementById("messages");
  // What the page holds, by message id: {id, version, at (created, for the order), li}; first what the server
  // drew. Each poll asks for the versions past the highest held, then checks the whole against the
  // server's count and sum of versions: a message deleted, or a change committed after a later one the
  // page already had, makes them differ, and the next poll asks for every message (as the first poll
  // does where the page's own drawing is not readable).
  const held = new Map();
  list.querySelectorAll("li.msg").forEach((li) => {
    held.set(Number(li.dataset.id), { id: Number(li.dataset.id), version: Number(li.dataset.version),
                                      at: Date.parse(li.dataset.created), li });
  });
  let whole = Array.from(held.values()).some((e) => Number.isNaN(e.version) || Number.isNaN(e.at));

  function fmt(v, digits) { return v === null || v === undefined ? null : Number(v).toFixed(digits); }

  function render(m) {
    const li = document.createElement("li");
    li.className = `msg ${m.direction} ${m.sender}`;
    li.dataset.id = m.id;
    if (m.form_token) li.dataset.formToken = m.form_token;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = m.sender_label + (m.agent_name ? " · " + m.agent_name : "") + " · ";
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = m.created.replace("T", " ").slice(0, 19);
    who.append(when);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    const meta = document.createElement("div");
    meta.className = "meta muted";
    const parts = [];
    if (m.direction === "out") parts.push("delivery: " + (m.delivery_status || "—") + (m.delivery_error ? " — " + m.delivery_error : "") + (m.delivery_note ? " — " + m.delivery_note : ""));
    if (m.direction === "in" && m.reply_state) parts.push("reply: " + m.reply_state_label + (m.skip_reason ? " (" + m.skip_reason + ")" : ""));
    const s = m.stats;
    if (s && s.canned) {
      parts.push("canned reply (no model)");
      if (m.latency_s !== null) parts.push("latency " + fmt(m.latency_s, 2) + " s");
    } else if (s) {
      parts.push(s.new_tokens + " tokens");
      if (m.tokens_per_s) parts.push(fmt(m.tokens_per_s, 1) + " tok/s");
      if (s.drafted) parts.push("acceptance " + fmt(m.acceptance_rate, 2));
      if (s.mean_tokens_per_forward) parts.push(fmt(s.mean_tokens_per_forward, 2) + " tok/forward");
      if (m.ttft_s !== null) parts.push("TTFT " + fmt(m.ttft_s, 2) + " s");
      if (m.latency_s !== null) parts.push("latency " + fmt(m.latency_s, 2) + " s");
      if (m.stop_note) parts.push(m.stop_note);
      if (s.bot_version) parts.push("version " + s.bot_version);
    }
    if (m.outside_team_hours) parts.push("sent outside team hours");
    if (m.rating) parts.push("customer: " + (m.rating > 0 ? "helpful" : "not helpful"));
    meta.textContent = parts.join(" · ");
    li.append(who, text);
    if (m.attachments && m.attachments.length) {
      const ul = document.createElement("ul");
      ul.className = "attachments";
      m.attachments.forEach((a, i) => {
        const item = document.createElement("li");
        const label = `Attachment ${i + 1}: ${a.label}`;
        if (a.url) {
          const link = document.createElement("a");
          Object.assign(link, { href: a.url, target: "_blank", rel: "noopener", textContent: label });
          item.append(link);
        } else item.textContent = label;
        ul.append(item);
      });
      li.append(ul);
    }
    li.append(meta);
    return li;
  }

  function show(id, shown) { document.getElementById(id).hidden = !shown; }

  // the state as the server draws it: the same words, and of each pair of buttons the one that applies
  function showState(c) {
    document.getElementById("conv-status").textContent = c.status_label;
    document.getElementById("conv-mode").textContent = c.bot_paused ? "an agent has it" : "the bot answers";
    show("conv-needs-human", c.needs_human);
    show("conv-give-back", c.bot_paused);
    show("conv-take-over", !c.bot_paused);
    show("conv-close", c.status === "open");
    show("conv-reopen", c.status !== "open");
    const assignee = document.getElementById("assignee");
    const id = c.assignee ? String(c.assignee.id) : "";
    if (id !== assignee.dataset.current) {  // assigned since: shown, but not over a choice the agent is making
      assignee.dataset.current = id;
      if (id && !Array.from(assignee.options).some((o) => o.value === id)) assignee.append(new Option(c.assignee.name, id));
      assignee.value = id;
    }
  }

  function entry(m) { return { id: m.id, version: m.version, at: Date.parse(m.created), li: render(m) }; }

  // the server's order: created, then id
  function inOrder() { return Array.from(held.values()).sort((a, b) => a.at - b.at || a.id - b.id); }

  // Takes in a poll's messages (all of them, or those changed past `since`); says whether the page now
  // holds what the server counted.
  function take(data, all) {
    if (all) {
      held.clear();
      data.messages.forEach((m) => held.set(m.id, entry(m)));
      list.replaceChildren(...Array.from(held.values(), (e) => e.li));
      return true;  // one answer, all of it: nothing to check it against
    }
    let added = false;
    data.messages.forEach((m) => {
      const had = held.get(m.id), now = entry(m);
      if (had) had.li.replaceWith(now.li);
      else added = true;
      held.set(m.id, now);
    });
    if (added) list.replaceChildren(...inOrder().map((e) => e.li));
    let sum = 0;
    held.forEach((e) => { sum += e.version; });
    return held.size === data.count && sum === data.version_sum;
  }

  async function poll() {
    try {
      const all = whole;
      const url = new URL(thread.dataset.poll, location.href);
      if (!all) url.searchParams.set("since", Array.from(held.values()).reduce((v, e) => Math.max(v, e.version), 0));
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        whole = !take(data, all);
        showState(data.conversation);
      }
    } catch (e) { /* offline for a moment: try again on the next tick, from what the page holds */ }
    setTimeout(poll, 3000);
  }
  poll();
})();

// Inbox list: poll the list's stamp (same filters) and say when there is something new to show,
// rather than redrawing the table under the agent's cursor.
(function () {
  const list = document.getElementById("inbox-list");
  const news = document.getElementById("inbox-news");
  if (!list || !news) return;
  async function poll() {
    try {
      const response = await fetch(list.dataset.poll, { headers: { Accept: "application/json" } });
      if (response.ok && (await response.json()).stamp !== list.dataset.stamp) {
        news.hidden = false;
        return;  // shown until the agent reloads
      }
    } catch (e) { /* offline for a moment: try again */ }
    setTimeout(poll, 5000);
  }
  setTimeout(poll, 5000);
})();

// Inbox list, bulk actions: "tick all" ticks the page's rows; the assignee and tag boxes show only
// for the action that takes them.
(function () {
  const all = document.getElementById("tick-all");
  const action = document.getElementById("bulk-action");
  if (!all || !action) return;
  const ticks = () => Array.from(document.querySelectorAll("input.tick"));
  all.addEventListener("change", () => ticks().forEach((t) => { t.checked = all.checked; }));
  document.addEventListener("change", (e) => {
    if (e.target.classList && e.target.classList.contains("tick")) all.checked = ticks().every((t) => t.checked);
  });
  function showInputs() {
    document.querySelectorAll("#bulk-form [data-for]").forEach((el) => { el.hidden = el.dataset.for !== action.value; });
  }
  action.addEventListener("change", showInputs);
  showInputs();
})();

// Saved replies: picking one inserts its text into the reply box ({name} -> the customer's name).
(function () {
  const picker = document.getElementById("saved-reply");
  const box = document.getElementById("reply-text");
  if (!picker || !box) return;
  picker.addEventListener("change", function () {
    const option = picker.selectedOptions[0];
    if (!option || !option.value) return;
    const text = option.dataset.text.split("{name}").join(picker.dataset.name || "");
    box.value = box.value ? box.value.replace(/\s*$/, "\n\n") + text : text;
    picker.value = "";
    box.dispatchEvent(new Event("input", { bubbles: true }));  // kept as a draft, like typed words
    box.focus();
  });
})();

// The reply being written survives the thread's own actions (take over, assign, tag, close: each a
// full-page post and reload): kept per conversation (and agent: a shared tab) in this tab's
// sessionStorage as it is typed, put back on load. Sending it notes the form's one-time token; the
// draft is dropped only once the thread shows the message stored from that form (it carries the
// token). A refused reply (the conversation gone from this organisation, the session expired, too
// long) comes back in the box.
(function () {
  const form = document.getElementById("reply-form");
  const box = document.getElementById("reply-text");
  if (!form || !box || !form.dataset.draftKey) return;
  const key = form.dataset.draftKey;
  const sentKey = key + ":sent";
  const token = form.querySelector("input[name=form_token]");
  function keep() {
    try {
      sessionStorage.removeItem(sentKey);  // changed since it was sent: no longer that reply
      if (box.value) sessionStorage.setItem(key, box.value);
      else sessionStorage.removeItem(key);
    } catch (e) { /* storage off or full: the draft is just not kept */ }
  }
  function stored(sent) {
    return Array.from(document.querySelectorAll("#messages li.msg")).some((li) => li.dataset.formToken === sent);
  }
  try {
    const sent = sessionStorage.getItem(sentKey);
    if (sent && stored(sent)) {
      sessionStorage.removeItem(key);
      sessionStorage.removeItem(sentKey);
    } else {
      const draft = sessionStorage.getItem(key);
      if (draft && !box.value) box.value = draft;
    }
  } catch (e) { /* storage off */ }
  box.addEventListener("input", keep);
  form.addEventListener("submit", function () {
    try { if (token) sessionStorage.setItem(sentKey, token.value); } catch (e) { /* storage off */ }
  });
})();

// A form that stores a message (the reply, WhatsApp's re-engagement template) goes once: a second click
// while the first is on its way does nothing (the server, too, stores one message per rendered form).
// Its buttons are disabled only after the browser has read the form: disabled before, the clicked
// button's own value ("Add as internal note") would not be sent. A page shown again from the
// back/forward cache after sending is loaded afresh (a new token, the buttons back).
(function () {
  const forms = Array.from(document.querySelectorAll("form[data-once]"));
  forms.forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
      setTimeout(() => form.querySelectorAll("button").forEach((b) => { b.disabled = true; }));
    });
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && forms.some((f) => f.dataset.sent)) location.reload();
  });
})();
