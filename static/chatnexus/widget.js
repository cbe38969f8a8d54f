/* ChatNexus website widget. Embed with:
 *   <script src="https://HOST/static/chatnexus/widget.js" data-bot="PUBLIC_KEY" async></script>
 * Vanilla JS in a shadow root (no styles leak in or out). The platform's origin comes
 * from this script's own src; the bot's look from /channels/widget/<key>/config/; the
 * conversation over ws(s)://HOST/ws/widget/<key>/. Model output is rendered with DOM
 * nodes and textContent only — never innerHTML.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector('script[data-bot][src*="chatnexus/widget.js"]');
  if (!script || window.__chatnexusWidget) return;
  window.__chatnexusWidget = true;
  var key = script.getAttribute("data-bot") || "";
  var origin = new URL(script.src, location.href).origin;
  var storeKey = "chatnexus:" + key;
  function stored() { try { return JSON.parse(localStorage.getItem(storeKey) || "{}") || {}; } catch (e) { return {}; } }
  var store = stored();
  // Other tabs of the site share the visitor: a token one of them got since this tab loaded is
  // kept (and used), never overwritten by this tab's older copy ("" marks a token dropped on purpose);
  // so are the unsent frames another tab keeps (all but those this tab saw taken or refused).
  var forgotten = {};
  function save() {
    var latest = stored();
    if (store.token === undefined && latest.token) store.token = latest.token;
    var own = outbox || [], mine = {};  // (undefined until the widget's state is set up below)
    own.forEach(function (o) { mine[o.id] = true; });
    store.outbox = own.concat((latest.outbox || []).filter(function (o) { return !mine[o.id] && !forgotten[o.id]; }));
    try { localStorage.setItem(storeKey, JSON.stringify(store)); } catch (e) { /* private mode */ }
  }

  var look = { name: "Chat", avatar_color: "#4f46e5", greeting: "", position: "right", prechat_email: false, max_message_chars: 2000, language: "auto", suggestions: [], uploads: false, max_upload_mb: 5, accept: "", team_away: false };

  // -- the widget's own words: the bot's widget language, else the host page's <html lang>,
  // else the browser's, else English (the bot's answers follow its own instructions)
  var WORDS = {
    en: { unread: "new messages: {n}", away: "Our team is away right now: the bot can help, and a person will reply here when they are back.", humanRequest: "I'd like to talk to a human, please.", team: "From the team", suggestions: "Suggested questions", notAllowed: "This website is not allowed to use this chat.", open: "Open chat with {name}", chat: "Chat with {name}", human: "Human", humanLabel: "Talk to a human",
          close: "Close chat", email: "Your email (optional)", message: "Message", placeholder: "Type your message\u2026",
          send: "Send", sendLabel: "Send message", typing: "{name} is typing", rate: "Rate this answer",
          helpful: "Helpful", notHelpful: "Not helpful", unavailable: "Chat is unavailable on this website.",
          reconnecting: "Connection lost \u2014 reconnecting\u2026", badEmail: "That email address does not look right.",
          tooFast: "You're sending messages too quickly. Please wait {n} seconds and try again.",
          tooLong: "Messages are limited to {n} characters.", empty: "Please type a message.",
          attach: "Attach a file", fileTooBig: "Files are limited to {n} MB.", uploadFailed: "The file could not be sent. Please try again." },
    es: { unread: "mensajes nuevos: {n}", away: "Nuestro equipo no est\u00e1 disponible ahora: el bot puede ayudarte y una persona responder\u00e1 aqu\u00ed cuando vuelva.", humanRequest: "Me gustar\u00eda hablar con una persona, por favor.", team: "Del equipo", suggestions: "Preguntas sugeridas", notAllowed: "Este sitio web no tiene permiso para usar este chat.", open: "Abrir el chat con {name}", chat: "Chat con {name}", human: "Persona", humanLabel: "Hablar con una persona",
          close: "Cerrar el chat", email: "Tu correo (opcional)", message: "Mensaje", placeholder: "Escribe tu mensaje\u2026",
          send: "Enviar", sendLabel: "Enviar mensaje", typing: "{name} est\u00e1 escribiendo", rate: "Valora esta respuesta",
          helpful: "\u00datil", notHelpful: "No es \u00fatil", unavailable: "El chat no est\u00e1 disponible en este sitio web.",
          reconnecting: "Conexi\u00f3n perdida \u2014 reconectando\u2026", badEmail: "Esa direcci\u00f3n de correo no parece correcta.",
          tooFast: "Est\u00e1s enviando mensajes demasiado r\u00e1pido. Espera {n} segundos y vuelve a intentarlo.",
          tooLong: "Los mensajes tienen un l\u00edmite de {n} caracteres.", empty: "Escribe un mensaje.",
          attach: "Adjuntar un archivo", fileTooBig: "Los archivos tienen un l\u00edmite de {n} MB.", uploadFailed: "No se pudo enviar el archivo. Int\u00e9ntalo de nuevo." },
    fr: { unread: "nouveaux messages\u00a0: {n}", away: "Notre \u00e9quipe est absente pour le moment : le bot peut vous aider, et une personne vous r\u00e9pondra ici \u00e0 son retour.", humanRequest: "J\u2019aimerais parler \u00e0 une personne, s\u2019il vous pla\u00eet.", team: "De l\u2019\u00e9quipe", suggestions: "Questions sugg\u00e9r\u00e9es", notAllowed: "Ce site n\u2019est pas autoris\u00e9 \u00e0 utiliser ce chat.", open: "Ouvrir le chat avec {name}", chat: "Chat avec {name}", human: "Humain", humanLabel: "Parler \u00e0 une personne",
          close: "Fermer le chat", email: "Votre e-mail (facultatif)", message: "Message", placeholder: "\u00c9crivez votre message\u2026",
          send: "Envoyer", sendLabel: "Envoyer le message", typing: "{name} \u00e9crit", rate: "\u00c9valuez cette r\u00e9ponse",
          helpful: "Utile", notHelpful: "Pas utile", unavailable: "Le chat n\u2019est pas disponible sur ce site.",
          reconnecting: "Connexion perdue \u2014 reconnexion\u2026", badEmail: "Cette adresse e-mail ne semble pas correcte.",
          tooFast: "Vous envoyez des messages trop vite. Attendez {n} secondes puis r\u00e9essayez.",
          tooLong: "Les messages sont limit\u00e9s \u00e0 {n} caract\u00e8res.", empty: "\u00c9crivez un message.",
          attach: "Joindre un fichier", fileTooBig: "Les fichiers sont limit\u00e9s \u00e0 {n} Mo.", uploadFailed: "Le fichier n\u2019a pas pu \u00eatre envoy\u00e9. R\u00e9essayez." },
    de: { unread: "neue Nachrichten: {n}", away: "Unser Team ist gerade nicht da: Der Bot kann helfen, und ein Mensch antwortet hier, sobald es zur\u00fcck ist.", humanRequest: "Ich m\u00f6chte bitte mit einem Menschen sprechen.", team: "Vom Team", suggestions: "Vorgeschlagene Fragen", notAllowed: "Diese Website darf diesen Chat nicht verwenden.", open: "Chat mit {name} \u00f6ffnen", chat: "Chat mit {name}", human: "Mensch", humanLabel: "Mit einem Menschen sprechen",
          close: "Chat schlie\u00dfen", email: "Ihre E-Mail (optional)", message: "Nachricht", placeholder: "Nachricht eingeben\u2026",
          send: "Senden", sendLabel: "Nachricht senden", typing: "{name} schreibt", rate: "Diese Antwort bewerten",
          helpful: "Hilfreich", notHelpful: "Nicht hilfreich", unavailable: "Der Chat ist auf dieser Website nicht verf\u00fcgbar.",
          reconnecting: "Verbindung verloren \u2014 verbinde neu\u2026", badEmail: "Diese E-Mail-Adresse scheint nicht zu stimmen.",
          tooFast: "Sie senden Nachrichten zu schnell. Bitte warten Sie {n} Sekunden und versuchen Sie es erneut.",
          tooLong: "Nachrichten sind auf {n} Zeichen begrenzt.", empty: "Bitte geben Sie eine Nachricht ein.",
          attach: "Datei anh\u00e4ngen", fileTooBig: "Dateien sind auf {n} MB begrenzt.", uploadFailed: "Die Datei konnte nicht gesendet werden. Bitte erneut versuchen." },
    pt: { unread: "mensagens novas: {n}", away: "A nossa equipa n\u00e3o est\u00e1 dispon\u00edvel agora: o bot pode ajudar e uma pessoa responder\u00e1 aqui quando voltar.", humanRequest: "Gostaria de falar com uma pessoa, por favor.", team: "Da equipa", suggestions: "Perguntas sugeridas", notAllowed: "Este site n\u00e3o tem permiss\u00e3o para usar este chat.", open: "Abrir o chat com {name}", chat: "Chat com {name}", human: "Pessoa", humanLabel: "Falar com uma pessoa",
          close: "Fechar o chat", email: "O seu e-mail (opcional)", message: "Mensagem", placeholder: "Escreva a sua mensagem\u2026",
          send: "Enviar", sendLabel: "Enviar mensagem", typing: "{name} est\u00e1 a escrever", rate: "Avalie esta resposta",
          helpful: "\u00datil", notHelpful: "N\u00e3o \u00e9 \u00fatil", unavailable: "O chat n\u00e3o est\u00e1 dispon\u00edvel neste site.",
          reconnecting: "Liga\u00e7\u00e3o perdida \u2014 a restabelecer\u2026", badEmail: "Esse endere\u00e7o de e-mail n\u00e3o parece correto.",
          tooFast: "Est\u00e1 a enviar mensagens demasiado depressa. Aguarde {n} segundos e tente de novo.",
          tooLong: "As mensagens est\u00e3o limitadas a {n} caracteres.", empty: "Escreva uma mensagem.",
          attach: "Anexar um ficheiro", fileTooBig: "Os ficheiros est\u00e3o limitados a {n} MB.", uploadFailed: "N\u00e3o foi poss\u00edvel enviar o ficheiro. Tente de novo." },
    it: { unread: "nuovi messaggi: {n}", away: "Il nostro team non \u00e8 disponibile ora: il bot pu\u00f2 aiutarti e una persona risponder\u00e0 qui al suo ritorno.", humanRequest: "Vorrei parlare con una persona, per favore.", team: "Dal team", suggestions: "Domande suggerite", notAllowed: "Questo sito non \u00e8 autorizzato a usare questa chat.", open: "Apri la chat con {name}", chat: "Chat con {name}", human: "Persona", humanLabel: "Parla con una persona",
          close: "Chiudi la chat", email: "La tua email (facoltativa)", message: "Messaggio", placeholder: "Scrivi il tuo messaggio\u2026",
          send: "Invia", sendLabel: "Invia messaggio", typing: "{name} sta scrivendo", rate: "Valuta questa risposta",
          helpful: "Utile", notHelpful: "Non utile", unavailable: "La chat non \u00e8 disponibile su questo sito.",
          reconnecting: "Connessione persa \u2014 riconnessione\u2026", badEmail: "Questo indirizzo email non sembra corretto.",
          tooFast: "Stai inviando messaggi troppo in fretta. Attendi {n} secondi e riprova.",
          tooLong: "I messaggi sono limitati a {n} caratteri.", empty: "Scrivi un messaggio.",
          attach: "Allega un file", fileTooBig: "I file sono limitati a {n} MB.", uploadFailed: "Impossibile inviare il file. Riprova." },
    nl: { unread: "nieuwe berichten: {n}", away: "Ons team is er nu niet: de bot kan helpen, en een mens antwoordt hier zodra het terug is.", humanRequest: "Ik wil graag met een mens praten.", team: "Van het team", suggestions: "Voorgestelde vragen", notAllowed: "Deze website mag deze chat niet gebruiken.", open: "Chat met {name} openen", chat: "Chat met {name}", human: "Mens", humanLabel: "Met een mens praten",
          close: "Chat sluiten", email: "Je e-mail (optioneel)", message: "Bericht", placeholder: "Typ je bericht\u2026",
          send: "Verstuur", sendLabel: "Bericht versturen", typing: "{name} is aan het typen", rate: "Beoordeel dit antwoord",
          helpful: "Nuttig", notHelpful: "Niet nuttig", unavailable: "De chat is niet beschikbaar op deze website.",
          reconnecting: "Verbinding verbroken \u2014 opnieuw verbinden\u2026", badEmail: "Dat e-mailadres lijkt niet te kloppen.",
          tooFast: "Je verstuurt te snel berichten. Wacht {n} seconden en probeer het opnieuw.",
          tooLong: "Berichten zijn beperkt tot {n} tekens.", empty: "Typ een bericht.",
          attach: "Bestand toevoegen", fileTooBig: "Bestanden zijn beperkt tot {n} MB.", uploadFailed: "Het bestand kon niet worden verstuurd. Probeer het opnieuw." }
  };
  function language() {
    var wanted = [look.language === "auto" ? "" : look.language, document.documentElement.lang, navigator.language];
    for (var i = 0; i < wanted.length; i++) {
      var code = String(wanted[i] || "").toLowerCase().split("-")[0];
      if (WORDS[code]) return code;
    }
    return "en";
  }
  function t(key, values) {
    return WORDS[language()][key].replace(/\{(\w+)\}/g, function (_, k) { return values && values[k] != null ? values[k] : ""; });
  }
  // A refusal from the server in the widget's language where its code is known, else as sent.
  function refusal(f) {
    if (f.code === "rate_limited" && f.retry_after) return t("tooFast", { n: f.retry_after });
    if (f.code === "too_long") return t("tooLong", { n: look.max_message_chars });
    if (f.code === "empty") return t("empty");
    if (f.code === "bad_email") return t("badEmail");
    if (f.code === "forbidden_origin") return t("notAllowed");
    if (f.code === "too_large") return t("fileTooBig", { n: look.max_upload_mb });
    if (f.code === "upload_failed") return t("uploadFailed");
    return f.message;
  }
  var ws = null, attempts = 0, fatal = false, retryAfter = 0, timer = null, connected = false;
  var outbox = [], sentOn = {}, byId = {}, byClient = {}, streams = {}, rows = {}, typingFor = null, hadHistory = false;
  var answered = {};  // message id -> true once its reply shows: a late reply.start or delta is stale
  // An open socket says it is there every few minutes: the server keeps it in its conversation's group
  // (the channel layer forgets members after a day), and proxies keep an idle connection.
  var PING_MS = 4 * 60 * 1000;

  // -- DOM helpers (no innerHTML anywhere)
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text != null) node.textContent = text;
    return node;
  }
  // An inline SVG icon (drawn in the button's colour): emoji glyphs are missing on pages
  // whose system has no emoji font, and would show as an empty box.
  var ICONS = {  // Material Icons "chat_bubble", "attach_file", "thumb_up", "thumb_down" (Apache License 2.0)
    chat: "M20 2H4c-1.1 0-2 .9-2 2v18l4-4h14c1.1 0 2-.9 2-2V4c0-1.1-.9-2-2-2z",
    clip: "M16.5 6v11.5c0 2.21-1.79 4-4 4s-4-1.79-4-4V5c0-1.38 1.12-2.5 2.5-2.5s2.5 1.12 2.5 2.5v10.5c0 .55-.45 " +
          "1-1 1s-1-.45-1-1V6H10v9.5c0 1.38 1.12 2.5 2.5 2.5s2.5-1.12 2.5-2.5V5c0-2.21-1.79-4-4-4S7 2.79 7 5v12.5c0 " +
          "3.04 2.46 5.5 5.5 5.5s5.5-2.46 5.5-5.5V6h-1.5z",
    up: "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 " +
        "7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
    down: "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31l-.95 4.57-.03.32c0 " +
          ".41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z"
  };
  function icon(name, size) {
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg"), path = document.createElementNS(ns, "path");
    svg.setAttribute("viewBox", "0 0 24 24"); svg.setAttribute("width", size); svg.setAttribute("height", size);
    svg.setAttribute("fill", "currentColor"); svg.setAttribute("aria-hidden", "true"); svg.setAttribute("focusable", "false");
    path.setAttribute("d", ICONS[name]);
    svg.appendChild(path);
    return svg;
  }
  // A tiny markdown subset built from DOM nodes: **bold**, *italic*, `code`, [text](https://link).
  var MD = /(\*\*[^*\n]+\*\*|`[^`\n]+`|\[[^\]\n]+\]\(https?:\/\/[^\s)]+\)|\*[^*\n]+\*)/g;
  function render(node, text) {
    while (node.firstChild) node.removeChild(node.firstChild);
    var last = 0, m, part;
    MD.lastIndex = 0;
    while ((m = MD.exec(text))) {
      if (m.index > last) node.appendChild(document.createTextNode(text.slice(last, m.index)));
      part = m[0];
      if (part.slice(0, 2) === "**") node.appendChild(el("strong", 0, part.slice(2, -2)));
      else if (part[0] === "`") node.appendChild(el("code", 0, part.slice(1, -1)));
      else if (part[0] === "[") {
        var i = part.indexOf("](");
        node.appendChild(el("a", { href: part.slice(i + 2, -1), target: "_blank", rel: "noopener noreferrer nofollow" }, part.slice(1, i)));
      } else node.appendChild(el("em", 0, part.slice(1, -1)));
      last = MD.lastIndex;
    }
    if (last < text.length) node.appendChild(document.createTextNode(text.slice(last)));
  }

  var CSS = ":host{all:initial}*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:14px;line-height:1.45}" +
    ".launcher{position:fixed;bottom:20px;right:20px;width:56px;height:56px;border-radius:50%;border:0;background:var(--c);color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000;display:flex;align-items:center;justify-content:center}" +
    ".left .launcher{left:20px;right:auto}.left .panel{left:20px;right:auto}" +
    ".badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;background:#dc2626;color:#fff;font-size:12px;font-weight:700;line-height:20px;text-align:center}.badge[hidden]{display:none}" +
    ".panel{position:fixed;bottom:88px;right:20px;width:min(370px,calc(100vw - 24px));height:min(560px,calc(100vh - 110px));height:min(560px,calc(100dvh - 110px));display:flex;flex-direction:column;background:#fff;color:#1f2330;border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden;z-index:2147483000}" +
    ".panel[hidden]{display:none}@media (max-width:480px){.panel,.left .panel{left:8px;right:8px;bottom:76px;width:auto;height:calc(100vh - 90px);height:calc(100dvh - 90px)}}" +
    "header{display:flex;align-items:center;gap:8px;padding:10px 12px;background:var(--c);color:#fff}" +
    ".avatar{width:30px;height:30px;border-radius:50%;background:#fff;color:var(--c);display:flex;align-items:center;justify-content:center;font-weight:700}" +
    ".title{flex:1;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}" +
    "header button{background:transparent;border:1px solid rgba(255,255,255,.7);color:#fff;border-radius:6px;padding:3px 8px;cursor:pointer}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f7f7fb}" +
    ".msg{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere;align-self:flex-start;background:#fff;border:1px solid #e5e7eb}" +
    ".msg.me{align-self:flex-end;background:var(--c);color:#fff;border:0}.msg.me a{color:#fff}.msg.failed{opacity:.6;border:1px dashed #b91c1c}.msg.pending{opacity:.7}" +
    ".msg.agent{border-color:var(--c)}.msg.agent::before{content:attr(data-from);display:block;font-size:11px;font-weight:600;color:var(--c);margin-bottom:2px}" +
    ".msg.system{align-self:center;background:#fff7ed;border-color:#fed7aa;font-size:13px}.msg code{font-family:monospace;background:rgba(0,0,0,.06);padding:0 3px;border-radius:3px}" +
    ".typing span{display:inline-block;width:6px;height:6px;margin:0 2px;border-radius:50%;background:#9ca3af;animation:b 1s infinite}.typing span:nth-child(2){animation-delay:.15s}.typing span:nth-child(3){animation-delay:.3s}" +
    ".chips{align-self:flex-start;display:flex;flex-wrap:wrap;gap:6px}.chips button{border:1px solid var(--c);color:var(--c);background:#fff;border-radius:14px;padding:4px 10px;cursor:pointer;font-size:13px}" +
    ".rate{align-self:flex-start;display:flex;gap:2px;margin-top:-6px}.rate button{border:0;background:none;cursor:pointer;opacity:.45;font-size:13px;padding:2px 4px;border-radius:6px}" +
    ".rate button[aria-pressed=true]{opacity:1;background:#e5e7eb}" +
    ".away{padding:6px 12px;font-size:12px;color:#7c2d12;background:#fff7ed;border-bottom:1px solid #fed7aa}" +
    "@keyframes b{50%{opacity:.3}}.status{padding:6px 12px;font-size:12px;color:#b91c1c;background:#fef2f2}.status:empty{display:none}" +
    "form{display:flex;flex-wrap:wrap;gap:6px;padding:8px;border-top:1px solid #e5e7eb;margin:0}" +
    "input,textarea{flex:1 1 60%;min-width:0;border:1px solid #d1d5db;border-radius:8px;padding:8px;color:#1f2330;background:#fff;resize:none}" +
    // under 16px, iOS Safari zooms the page when a field gets focus, pushing the fixed panel off screen
    "@media (max-width:480px){input,textarea{font-size:16px}}" +
    ".email{flex-basis:100%}.file{display:flex;align-items:center;gap:4px;margin-top:2px;font-size:13px;opacity:.9}.file:first-child{margin-top:0}" +
    "form .attach{background:#fff;color:var(--c);border:1px solid var(--c);padding:8px 10px}form button{border:0;border-radius:8px;padding:8px 14px;background:var(--c);color:#fff;cursor:pointer}" +
    "button:focus-visible,input:focus-visible,textarea:focus-visible{outline:2px solid #111;outline-offset:2px}button:disabled{opacity:.5;cursor:default}";

  // -- build the UI
  var host = el("div", { id: "chatnexus-widget" });
  var root = host.attachShadow({ mode: "open" });
  var wrap = el("div", { class: "wrap" });
  var launcher = el("button", { type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": "cn-panel", "aria-label": "Open chat" });
  launcher.appendChild(icon("chat", 26));
  var badge = el("span", { class: "badge", "aria-hidden": "true" });  // replies that came while the chat was closed
  badge.hidden = true;
  launcher.appendChild(badge);
  var panel = el("div", { id: "cn-panel", class: "panel", role: "dialog", "aria-label": "Chat" });
  panel.hidden = true;
  var header = el("header");
  var avatar = el("span", { class: "avatar", "aria-hidden": "true" });
  var title = el("span", { class: "title" });
  var human = el("button", { type: "button", class: "human", "aria-label": "Talk to a human" }, "Human");
  var closeBtn = el("button", { type: "button", class: "close", "aria-label": "Close chat" }, "\u2715");
  header.append(avatar, title, human, closeBtn);
  var awayNote = el("div", { class: "away" });  // outside the team's hours (the bot's config says so)
  awayNote.hidden = true;
  var log = el("div", { class: "log", role: "log", "aria-live": "polite" });
  var status = el("div", { class: "status", role: "alert" });
  var form = el("form");
  var email = el("input", { class: "email", type: "email", placeholder: "Your email (optional)", "aria-label": "Your email (optional)", autocomplete: "email", dir: "auto" });
  email.hidden = true;
  var input = el("textarea", { rows: "1", placeholder: "Type your message\u2026", "aria-label": "Message", dir: "auto" });
  var sendBtn = el("button", { type: "submit", "aria-label": "Send message" }, "Send");
  var attachBtn = el("button", { type: "button", class: "attach", "aria-label": "Attach a file", title: "Attach a file" });
  attachBtn.appendChild(icon("clip", 18));
  var picker = el("input", { type: "file", hidden: "" });
  attachBtn.hidden = true;
  form.append(email, input, attachBtn, picker, sendBtn);
  panel.append(header, awayNote, log, status, form);
  wrap.append(panel, launcher);
  // A constructed stylesheet: a host page whose CSP forbids inline styles (style-src 'self') would
  // block a <style> element; the element only where adoptedStyleSheets is missing (older browsers).
  if ("adoptedStyleSheets" in root) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else root.append(el("style", 0, CSS));
  root.append(wrap);

  function applyLook() {
    wrap.style.setProperty("--c", /^#[0-9a-fA-F]{3,8}$/.test(look.avatar_color) ? look.avatar_color : "#4f46e5");
    wrap.className = "wrap " + (look.position === "left" ? "left" : "right");
    avatar.textContent = (look.name || "C").charAt(0).toUpperCase();
    title.textContent = look.name;
    showUnread();
    panel.setAttribute("aria-label", t("chat", { name: look.name }));
    human.textContent = t("human"); human.setAttribute("aria-label", t("humanLabel"));
    closeBtn.setAttribute("aria-label", t("close"));
    email.placeholder = t("email"); email.setAttribute("aria-label", t("email"));
    input.placeholder = t("placeholder"); input.setAttribute("aria-label", t("message"));
    sendBtn.textContent = t("send"); sendBtn.setAttribute("aria-label", t("sendLabel"));
    attachBtn.setAttribute("aria-label", t("attach")); attachBtn.title = t("attach"); attachBtn.hidden = !look.uploads;
    picker.accept = look.accept;  // the types the server takes (its config)
    wrap.setAttribute("lang", language());
    input.maxLength = look.max_message_chars;
    awayNote.textContent = t("away"); awayNote.hidden = !look.team_away;
  }

  // -- messages
  function scroll() { log.scrollTop = log.scrollHeight; }
  function bubble(who, text) {
    var node = el("div", { class: "msg " + who, dir: "auto" });  // right-to-left words lay out right
    render(node, text || "");
    log.appendChild(node);
    if (typingFor !== null) log.appendChild(typing);
    scroll();
    return node;
  }
  // The names of a message's files, one line each, under its text.
  function addFiles(node, files) {
    (files || []).forEach(function (f) {
      var line = el("span", { class: "file" });
      line.append(icon("clip", 14), document.createTextNode(f.name || f.content_type || ""));
      node.appendChild(line);
    });
  }
  function who(m) { return m.direction === "in" ? "me" : m.sender === "system" ? "system" : m.sender === "agent" ? "agent" : "bot"; }
  // Replies (the bot's, the team's) that arrive while the chat is closed: counted on the launcher,
  // kept across reloads, cleared when the chat is opened. store.seen: the newest reply id seen open.
  function noteReply(m) {
    if (m.direction !== "out" || !m.id) return;
    if (!panel.hidden) { store.seen = Math.max(store.seen || 0, m.id); save(); return; }
    if (m.id <= (store.seen || 0) || (store.unreadIds || []).indexOf(m.id) >= 0) return;
    store.unreadIds = (store.unreadIds || []).concat([m.id]).slice(-99); save(); showUnread();
  }
  function showUnread() {
    var n = (store.unreadIds || []).length;
    badge.textContent = n > 9 ? "9+" : n ? String(n) : ""; badge.hidden = n === 0;
    launcher.setAttribute("aria-label", t("open", { name: look.name }) + (n ? " (" + t("unread", { n: n }) + ")" : ""));
  }
  function markSeen() {
    var ids = (store.unreadIds || []).concat([store.seen || 0]);
    store.seen = Math.max.apply(null, ids); store.unreadIds = []; save(); showUnread();
  }

  function showMessage(m, clientId) {
    noteReply(m);
    hideChips();  // the conversation has begun
    var pend = clientId && byClient[clientId];
    var node = byId[m.id] || pend || (m.reply_to && streams[m.reply_to]);
    if (pend && pend !== node && pend.parentNode) pend.parentNode.removeChild(pend);
    if (node) { render(node, m.text); node.classList.remove("failed", "pending"); node.removeAttribute("aria-busy"); }
    else node = bubble(who(m), m.text);
    if (m.sender === "agent") node.setAttribute("data-from", t("team"));  // a person of the team wrote it, not the bot
    addFiles(node, m.attachments);
    byId[m.id] = node;
    if (m.reply_to) delete streams[m.reply_to];
    if (m.reply_to && m.direction === "out") answered[m.reply_to] = true;
    if (m.direction === "out") hideTyping();
    if (m.sender === "bot") rateRow(m);
  }
  // A thumbs up / down under each bot reply; the last choice counts (stored by the server).
  function rateRow(m) {
    var row = rows[m.id];
    if (!row) {
      row = rows[m.id] = el("div", { class: "rate", role: "group", "aria-label": t("rate") });
      [[1, "up", t("helpful")], [-1, "down", t("notHelpful")]].forEach(function (r) {
        var b = el("button", { type: "button", title: r[2], "aria-label": r[2], "aria-pressed": "false", "data-rating": String(r[0]) });
        b.appendChild(icon(r[1], 14));
        b.addEventListener("click", function () { if (connected) ws.send(JSON.stringify({ type: "rate", message: m.id, rating: r[0] })); });
        row.appendChild(b);
      });
    }
    byId[m.id].parentNode.insertBefore(row, byId[m.id].nextSibling);
    markRating(m.id, m.rating);
  }
  function markRating(id, rating) {
    if (!rows[id]) return;
    Array.prototype.forEach.call(rows[id].children, function (b) { b.setAttribute("aria-pressed", String(Number(b.getAttribute("data-rating")) === rating)); });
  }
  // The bot's suggested questions, under the greeting of a conversation with nothing in it yet.
  var chips = el("div", { class: "chips", role: "group" });
  function showChips() {
    while (chips.firstChild) chips.removeChild(chips.firstChild);
    chips.setAttribute("aria-label", t("suggestions"));
    (look.suggestions || []).forEach(function (question) {
      var b = el("button", { type: "button" }, question);
      b.addEventListener("click", function () {
        input.value = question;
        form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
      });
      chips.appendChild(b);
    });
    if (chips.firstChild) log.appendChild(chips);
  }
  function hideChips() { if (chips.parentNode) chips.parentNode.removeChild(chips); }
  var typing = el("div", { class: "msg typing", role: "status" });
  typing.append(el("span"), el("span"), el("span"));
  function showTyping(id) { typingFor = id; typing.setAttribute("aria-label", t("typing", { name: look.name })); log.appendChild(typing); scroll(); }
  function hideTyping() { typingFor = null; if (typing.parentNode) typing.parentNode.removeChild(typing); }

  function handle(f) {
    if (f.type === "session") { store.token = f.token; save(); }
    else if (f.type === "history") {
      connected = true; attempts = 0; status.textContent = ""; byId = {}; streams = {}; rows = {}; answered = {}; hideTyping();
      while (log.firstChild) log.removeChild(log.firstChild);
      if (look.greeting) bubble("bot greeting", look.greeting);
      f.messages.forEach(function (m) { showMessage(m); });
      for (var c in byClient) if (!byClient[c].parentNode) log.appendChild(byClient[c]);
      if (f.pending) showTyping(f.pending);
      hadHistory = f.messages.length > 0;
      if (!hadHistory && !Object.keys(byClient).length) showChips();
      email.hidden = !(look.prechat_email && !store.email && !hadHistory);
      flush();
    } else if (f.type === "message") {
      showMessage(f.message, f.client_id);
      // taken: not sent again, and a refusal's line from before (a bad email, too fast) goes
      if (f.client_id) { delete byClient[f.client_id]; forget(f.client_id); status.textContent = ""; }
    } else if (answered[f.reply_to] && (f.type === "reply.start" || f.type === "reply.delta")) {
      // the reply is shown already (a history frame had it): its stream's last frames are stale, not a new bubble
    } else if (f.type === "reply.start") showTyping(f.reply_to);
    else if (f.type === "reply.delta") {
      hideTyping();
      var node = streams[f.reply_to];
      // busy while it streams: the log is aria-live, and a bubble redrawn with every delta would be
      // read out again each time; screen readers read it once, whole, when the busy mark goes
      if (!node) { node = streams[f.reply_to] = bubble("bot", ""); node._text = ""; node.setAttribute("aria-busy", "true"); }
      node._text += f.delta;
      render(node, node._text);
      scroll();
    } else if (f.type === "reply.done") {
      if (f.message) showMessage(f.message);
      else if (streams[f.reply_to]) streams[f.reply_to].removeAttribute("aria-busy");  // its message follows
    }
    else if (f.type === "reply.cancelled" || f.type === "reply.error") {
      // a person took the conversation over while the bot was answering, or the bot could not answer
      // (the conversation goes to the team, and the bot's handoff message follows): its words so far go
      if (typingFor === f.reply_to) hideTyping();
      var gone = streams[f.reply_to];
      if (gone) gone.removeAttribute("aria-busy");
      if (gone && gone.parentNode) gone.parentNode.removeChild(gone);
      delete streams[f.reply_to];
    }
    else if (f.type === "conversation") { if (f.bot_paused) hideTyping(); }  // a person has it: the bot is not typing
    else if (f.type === "rated") markRating(f.message, f.rating);
    else if (f.type === "error") {
      status.textContent = refusal(f);
      // Before the history, a refusal is the connection's (the socket closes): the reconnect waits it out.
      // A message's refusal keeps the socket; its wait is for sending, not for reconnecting.
      if (f.retry_after && !connected) retryAfter = f.retry_after * 1000;
      if (f.client_id) {
        var refused = byClient[f.client_id];
        if (refused) {
          refused.classList.remove("pending"); refused.classList.add("failed");
          // the refused words go back into the box (unless something new is typed there), to edit and resend
          if (!input.value && refused.dataset.text) { input.value = refused.dataset.text; input.focus(); }
          delete byClient[f.client_id];
        }
        forget(f.client_id);  // a refused handoff (no bubble) too: not sent again on the next connect
      }
      if (f.code === "forbidden_origin") { fatal = true; input.disabled = sendBtn.disabled = human.disabled = true; }
      if (f.code === "bad_email") {
        // the browser took it, the server did not ("jo@gmail"): ask again instead of sending it with every message
        email.value = store.email || ""; delete store.email; save(); email.hidden = false; email.focus();
      }
      if (f.code === "bad_token") { store.token = ""; save(); }
    }
  }

  // -- connection: reconnect with backoff; every (re)connect resyncs from the server's history
  function connect() {
    clearTimeout(timer); timer = null;
    if (fatal || (ws && ws.readyState < 2)) return;
    var sock = ws = new WebSocket(origin.replace(/^http/, "ws") + "/ws/widget/" + encodeURIComponent(key) + "/");
    // The visitor token goes in the first frame, never in the URL (access logs keep URLs).
    // the backoff starts over once the server has really taken us (its history frame), not on open:
    // a server that accepts and then fails (its database down) would otherwise be retried every second
    ws.onopen = function () {
      if (!store.token && store.token !== "") store.token = stored().token;  // another tab's visitor, if any
      sock.send(JSON.stringify({ type: "hello", token: store.token || "" }));
    };
    ws.onmessage = function (e) { try { handle(JSON.parse(e.data)); } catch (err) { /* ignore a bad frame */ } };
    ws.onclose = function (e) {
      connected = false;
      if (fatal || e.code === 4403) { fatal = true; if (!status.textContent) status.textContent = t("unavailable"); return; }
      var delay = e.code === 4401 ? 0 : retryAfter || Math.min(30000, 1000 * Math.pow(2, attempts)) * (0.5 + Math.random() / 2);
      retryAfter = 0; attempts++;
      if (e.code !== 4401 && e.code !== 4429) status.textContent = t("reconnecting");
      clearTimeout(timer);
      timer = setTimeout(connect, delay);
    };
  }
  // A history frame also comes mid-connection (the conversation started, or changed): the frames this
  // socket carried already are waiting for their answer, not lost; only the others go.
  function flush() {
    if (!connected) return;
    outbox.forEach(function (o) { if (sentOn[o.id] !== ws) send(o); });
  }
  function send(frame) { sentOn[frame.id] = ws; ws.send(JSON.stringify(frame)); }
  // Frames the server has not taken yet live in the store too: a reload, or another page of the site,
  // shows them again and sends them once connected (the server stores a client id once).
  function forget(clientId) {
    forgotten[clientId] = true; delete sentOn[clientId];
    outbox = outbox.filter(function (o) { return o.id !== clientId; });
    save();
  }
  function restoreOutbox() {
    (store.outbox || []).forEach(function (frame) {
      outbox.push(frame);
      if (frame.type !== "message") return;  // a handoff has no bubble until the server's echo
      if (!log.firstChild && look.greeting) bubble("bot greeting", look.greeting);
      mine(frame.id, frame.text);
    });
  }
  // the visitor's own bubble, pending until the server's echo; its words kept to put back if refused
  function mine(id, text) {
    var node = byClient[id] = bubble("me pending", text);
    node.dataset.text = text;
    return node;
  }
  function newId() { return Date.now().toString(36) + Math.random().toString(36).slice(2, 10); }
  function post(frame) {
    outbox.push(frame); save();
    if (connected) send(frame);
    else if (!timer) connect();  // a reconnect is already waiting out its backoff: the outbox goes then
  }

  // -- interactions
  function open(restoring) {
    panel.hidden = false; launcher.setAttribute("aria-expanded", "true");
    markSeen();
    if (restoring !== true) refreshLook();
    if (!log.firstChild && look.greeting) bubble("bot greeting", look.greeting);
    store.open = true; save(); connect();
    if (restoring !== true) input.focus();
  }
  function close() {
    panel.hidden = true; launcher.setAttribute("aria-expanded", "false");
    store.open = false; save(); launcher.focus();
  }
  launcher.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") { e.preventDefault(); close(); } });
  input.addEventListener("keydown", function (e) {
    // Enter while an input method is composing (Japanese, Chinese...) picks the words, it does not send
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit")); }
  });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || fatal) return;
    var frame = { type: "message", text: text, id: newId() };
    var address = email.hidden ? store.email : email.value.trim();
    if (address) {
      if (!email.hidden && !email.checkValidity()) { status.textContent = t("badEmail"); email.focus(); return; }
      frame.email = store.email = address; save(); email.hidden = true;
    }
    hideChips();
    mine(frame.id, text);
    input.value = "";
    post(frame);
  });
  human.addEventListener("click", function () { post({ type: "handoff", id: newId(), text: t("humanRequest") }); });
  // A file goes over HTTP (multipart, no cookies), with the text typed so far as its caption;
  // then "sync" lets the socket follow the conversation the file may have started.
  attachBtn.addEventListener("click", function () { if (!fatal) picker.click(); });
  picker.addEventListener("change", function () {
    var file = picker.files && picker.files[0];
    picker.value = "";
    if (!file || fatal) return;
    if (file.size > look.max_upload_mb * 1024 * 1024) { status.textContent = t("fileTooBig", { n: look.max_upload_mb }); return; }
    var id = newId(), text = input.value.trim(), body = new FormData();
    body.append("token", store.token || ""); body.append("id", id); body.append("text", text); body.append("file", file);
    hideChips();
    var node = mine(id, text);
    addFiles(node, [{ name: file.name }]);
    input.value = "";
    function failed() { handle({ type: "error", code: "upload_failed", message: t("uploadFailed"), client_id: id }); }
    fetch(origin + "/channels/widget/" + encodeURIComponent(key) + "/upload/", { method: "POST", body: body, credentials: "omit" })
      .then(function (r) { return r.json(); })
      .then(function (f) {
        if (f.type === "error") { f.client_id = id; handle(f); return; }
        handle(f);
        if (connected) ws.send(JSON.stringify({ type: "sync" }));
      }, failed);
  });

  // the bot's look and whether its team is away; fetched again when the chat is opened or its tab
  // comes back after LOOK_STALE_MS, so a page left open across the team's hours says the right thing
  var LOOK_STALE_MS = 5 * 60 * 1000, lookFetched = 0;
  function loadLook() {
    lookFetched = Date.now();
    return fetch(origin + "/channels/widget/" + encodeURIComponent(key) + "/config/", { credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { for (var k in look) if (data[k] != null) look[k] = data[k]; applyLook(); } })
      .catch(function () { /* the websocket reports why (e.g. this origin is not allowed) */ });
  }
  function refreshLook() { if (Date.now() - lookFetched > LOOK_STALE_MS) loadLook(); }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !panel.hidden) refreshLook();
  });

  setInterval(function () { if (connected) ws.send(JSON.stringify({ type: "ping" })); }, PING_MS);

  function start() {
    applyLook();
    document.body.appendChild(host);
    loadLook().then(function () {
      restoreOutbox();
      if (store.open) open(true);
      else if (outbox.length) connect();  // sent with the chat closed too; replies count on the launcher
    });
  }
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
