/* llmos chat widget. Embed with one tag:
 *   <script src="https://HOST/widget.js" data-key="llmos_wk_..." data-title="Shop" async></script>
 * Optional: data-color="#2f6f5e", data-greeting="Hi!". The API base is where this file came from.
 * Text from replies, documents and agents is only set via textContent/createTextNode; links
 * only from http(s) URLs. Styles live in a shadow root. */
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me || !document.body || !window.fetch) return;
  var key = me.getAttribute("data-key") || "";
  var title = me.getAttribute("data-title") || "Chat";
  var greeting = me.getAttribute("data-greeting") || "Hi! Ask me anything about " + title + ".";
  var color = me.getAttribute("data-color") || "";
  var src = new URL(me.src, location.href);
  var base = src.origin + src.pathname.replace(/\/widget\.js$/, "");
  var prefix = key.slice(0, 16), tag = prefix.replace(/\W/g, "");
  var SKEY = "llmos:" + prefix + ":session", OKEY = "llmos:" + prefix + ":open";
  if (document.querySelector("llmos-widget[data-prefix='" + tag + "']")) return;

  var CSS =
    ":host{all:initial;--c:#2f6f5e;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2320}" +
    "*{box-sizing:border-box}" +
    ".bubble{position:fixed;right:20px;bottom:20px;width:58px;height:58px;border-radius:50%;border:0;background:var(--c);color:#fff;cursor:pointer;box-shadow:0 4px 14px #0004;display:grid;place-items:center;z-index:2147483000}" +
    ".bubble svg{width:28px;height:28px;fill:currentColor}" +
    "button:focus-visible,textarea:focus-visible,a:focus-visible,ol:focus-visible{outline:3px solid #f0a500;outline-offset:2px}" +
    ".panel{position:fixed;right:20px;bottom:90px;width:370px;max-width:calc(100vw - 24px);height:540px;max-height:calc(100vh - 110px);background:#fff;border-radius:14px;box-shadow:0 10px 40px #0005;display:flex;flex-direction:column;overflow:hidden;z-index:2147483000}" +
    ".panel[hidden]{display:none}" +
    "header{background:var(--c);color:#fff;padding:12px 14px;display:flex;align-items:center}" +
    "h2{font-size:16px;margin:0;flex:1;font-weight:600}" +
    ".close{background:none;border:0;color:#fff;font-size:22px;line-height:1;cursor:pointer;padding:2px 8px;border-radius:6px}" +
    ".del{font:inherit;font-size:13px;border:1px solid #fff9;margin-right:6px}" +
    "ol{list-style:none;margin:0;padding:12px;flex:1;overflow-y:auto;display:flex;flex-direction:column;gap:10px;background:#f6f7f6}" +
    "li{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}" +
    ".user{align-self:flex-end;background:var(--c);color:#fff;border-bottom-right-radius:4px}" +
    ".bot,.agent{align-self:flex-start;background:#fff;border:1px solid #dde2df;border-bottom-left-radius:4px}" +
    ".agent{border-color:#c9a227;background:#fffbea}" +
    ".who{display:block;font-size:12px;color:#5b6561}" +
    ".note{align-self:center;color:#5b6561;font-size:13px;text-align:center}" +
    ".pending .text:empty::after{content:'\u2026';animation:b 1s infinite}" +
    "@keyframes b{50%{opacity:.2}}" +
    ".sources{margin:6px 0 0;padding:6px 0 0 16px;border-top:1px solid #e4e8e6;font-size:12.5px;color:#48524e;white-space:normal}" +
    ".sources::before{content:'Sources';display:block;margin-left:-16px;font-weight:600}" +
    ".sources li{padding:0;max-width:none}" +
    ".sources a{color:var(--c)}" +
    ".status{margin:0;padding:0 12px;font-size:13px;color:#a4262c;background:#f6f7f6}" +
    ".status:not(:empty){padding:6px 12px}" +
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #dde2df}" +
    "textarea{flex:1;resize:none;font:inherit;padding:8px 10px;border:1px solid #b9c2be;border-radius:10px;min-height:42px;max-height:120px;color:inherit}" +
    ".send{background:var(--c);color:#fff;border:0;border-radius:10px;padding:0 16px;font:inherit;font-weight:600;cursor:pointer}" +
    ".send:disabled{opacity:.55}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}";

  // -- DOM: createElement only; data only through textContent ----------------------------
  function el(tag, attrs, text, parent) {
    var n = document.createElement(tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (text != null) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  var host = document.createElement("llmos-widget");
  host.setAttribute("data-prefix", tag);
  host.style.setProperty("display", "block", "important");
  if (/^#[0-9a-f]{3,8}$/i.test(color)) host.style.setProperty("--c", color);
  var root = host.attachShadow({ mode: "open" });
  if (root.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet(); // not subject to the host page's style-src CSP
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else {
    el("style", {}, CSS, root);
  }
  var bubble = el("button", { class: "bubble", type: "button", "aria-expanded": "false",
    "aria-controls": "llmos-panel" }, null, root);
  var NS = "http://www.w3.org/2000/svg";
  var svg = bubble.appendChild(document.createElementNS(NS, "svg"));
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.appendChild(document.createElementNS(NS, "path")).setAttribute("d",
    "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
  var panel = el("div", { class: "panel", id: "llmos-panel", role: "dialog", "aria-modal": "false",
    "aria-labelledby": "llmos-title" }, null, root);
  panel.hidden = true;
  var head = el("header", {}, null, panel);
  el("h2", { id: "llmos-title" }, title, head);
  var delBtn = el("button", { class: "close del", type: "button",
    "aria-label": "Delete this conversation" }, "Delete", head);
  var closeBtn = el("button", { class: "close", type: "button", "aria-label": "Close chat" }, "\u00d7", head);
  var log = el("ol", { "aria-live": "polite", "aria-label": "Conversation", tabindex: "0" }, null, panel);
  var status = el("p", { class: "status", role: "status" }, null, panel);
  var form = el("form", {}, null, panel);
  var input = el("textarea", { rows: "1", "aria-label": "Message", maxlength: "4000",
    placeholder: "Type your question\u2026" }, null, form);
  var send = el("button", { class: "send", type: "submit" }, "Send", form);
  document.body.appendChild(host);

  // -- state -------------------------------------------------------------------------------
  function store(s, k, v) {
    try { if (v == null) s.removeItem(k); else s.setItem(k, v); } catch (e) { /* storage off */ }
  }
  function load(s, k) { try { return s.getItem(k); } catch (e) { return null; } }
  var sessionId = load(localStorage, SKEY);
  var lastTurn = 0, seen = {}, busy = false, pollTimer = null, handoff = null;

  function scroll() { log.scrollTop = log.scrollHeight; }
  function note(text) { el("li", { class: "note" }, text, log); scroll(); }
  function message(kind, text, sources) {
    var li = el("li", { class: kind }, null, log);
    if (kind === "agent") el("span", { class: "who" }, "Support agent", li);
    else el("span", { class: "sr" }, kind === "user" ? "You: " : "Assistant: ", li);
    el("span", { class: "text" }, null, li).appendChild(document.createTextNode(text || ""));
    showSources(li, sources);
    scroll();
    return li;
  }
  function safeUrl(ref) {
    try {
      var u = new URL(String(ref));
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) { return null; }
  }
  function showSources(li, sources) {
    if (!sources || !sources.length) return;
    var ul = el("ul", { class: "sources", "aria-label": "Sources" }, null, li);
    for (var i = 0; i < sources.length && i < 5; i++) {
      var s = sources[i] || {}, label = String(s.title || s.ref || s.kind || "source");
      var item = el("li", {}, null, ul), href = safeUrl(s.ref);
      if (href) el("a", { target: "_blank", rel: "noopener noreferrer" }, label, item).href = href;
      else item.textContent = label;
    }
  }
  function setStatus(text) { status.textContent = text || ""; }
  function setBusy(b) { busy = b; send.disabled = b; }
  function friendly(res, body) {
    var c = res.status, wait = parseInt(res.headers.get("Retry-After") || "", 10);
    if (c === 401 || c === 403) return "This chat isn't available on this site right now.";
    if (c === 429) return "Too many messages \u2014 please wait " + (wait > 0 ? wait + " s" : "a moment") + " and try again.";
    if (c === 413) return "That message is too long.";
    if (c === 422 && body && typeof body.error === "string") return "Sorry: " + body.error.slice(0, 200);
    if (c >= 500) return "The assistant is having trouble right now. Please try again shortly.";
    return "Something went wrong (" + c + "). Please try again.";
  }
  var OFFLINE = "Can't reach the assistant. Check your connection and try again.";
  function uuid() {
    var c = window.crypto, b = new Uint8Array(16);
    if (c.randomUUID) return c.randomUUID();
    c.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }
  function api(path, opts) {
    opts = opts || {};
    opts.headers = opts.headers || {};
    opts.headers["X-API-Key"] = key;
    opts.credentials = "omit";
    opts.cache = "no-store";
    return fetch(base + path, opts);
  }
  function errorBody(res) { return res.json().catch(function () { return null; }); }
  function forget() { sessionId = null; store(localStorage, SKEY, null); delBtn.hidden = true; }

  // -- transcript restore and handoff polling ------------------------------------------------
  function addTurn(t) {
    var n = +t.n || 0, agent = t.kind === "agent";
    if (n && seen[n]) return;
    if (n) seen[n] = 1;
    if (n > lastTurn) lastTurn = n;
    if (t.user && !agent) message("user", String(t.user));
    if (t.reply) message(agent ? "agent" : "bot", String(t.reply), agent ? null : t.sources);
  }
  function setHandoff(h) {
    var was = !!handoff;
    handoff = h || null;
    if (handoff && !was) note("You're being connected to a person from our team.");
    if (!handoff && was) note("The conversation is back with the assistant.");
    if (handoff && !pollTimer) pollTimer = setInterval(poll, 3000);
    if (!handoff && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }
  function fetchTurns(after) {
    return api("/v1/sessions/" + encodeURIComponent(sessionId) + (after ? "?after=" + after : ""))
      .then(function (res) {
        if (res.status === 404) { forget(); setHandoff(null); return null; }
        if (!res.ok) return errorBody(res).then(function (b) { setStatus(friendly(res, b)); });
        return res.json();
      }).then(function (data) {
        if (data) { (data.turns || []).forEach(addTurn); setHandoff(data.handoff); }
      });
  }
  function poll() {
    if (!busy && sessionId) fetchTurns(lastTurn).catch(function () { /* the next tick retries */ });
  }

  // -- sending and streaming ---------------------------------------------------------------
  function parseEvent(block) {
    var ev = "message", data = [];
    block.split(/\r?\n/).forEach(function (line) {
      if (line.indexOf("event:") === 0) ev = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    try { return data.length ? { event: ev, data: JSON.parse(data.join("\n")) } : null; } catch (e) { return null; }
  }
  function submit(text, retried) {
    setBusy(true);
    setStatus("");
    var bot = message("bot", ""), textNode = bot.querySelector(".text").firstChild, done = false;
    bot.classList.add("pending");
    function finish(errText) {
      done = true;
      bot.classList.remove("pending");
      if (!textNode.data) bot.remove();
      if (errText) setStatus(errText);
      setBusy(false);
    }
    function handle(ev) {
      var d = ev.data || {}, r = d.reply || {};
      if (ev.event === "start" && d.session_id) {
        sessionId = String(d.session_id);
        store(localStorage, SKEY, sessionId);
        delBtn.hidden = false;
      } else if (ev.event === "chunk" && typeof d.text === "string") {
        textNode.appendData(d.text);
        scroll();
      } else if (ev.event === "done") {
        if (d.turn) { seen[d.turn] = 1; if (d.turn > lastTurn) lastTurn = d.turn; }
        if (typeof r.text === "string") textNode.data = r.text;
        showSources(bot, r.sources);
        setHandoff(d.handoff);
        finish(null);
      } else if (ev.event === "error") {
        finish("Sorry: " + String(d.error || "something went wrong").slice(0, 200));
      }
    }
    var body = JSON.stringify({ session_id: sessionId, message: text, idempotency_key: uuid() });
    return api("/v1/chat/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: body,
    }).then(function (res) {
      if (res.status === 404 && sessionId && !retried) { // the server forgot us: start over once
        forget();
        bot.remove();
        return submit(text, true);
      }
      if (!res.ok || !res.body) return errorBody(res).then(function (b) { finish(friendly(res, b)); });
      var reader = res.body.getReader(), decoder = new TextDecoder(), buf = "";
      function pump() {
        return reader.read().then(function (r) {
          if (r.value) buf += decoder.decode(r.value, { stream: true });
          var parts = buf.split(/\r?\n\r?\n/);
          buf = parts.pop();
          parts.forEach(function (p) { var ev = parseEvent(p); if (ev && !done) handle(ev); });
          if (!r.done) return pump();
          if (!done) finish("The reply was cut off. Please try again.");
        });
      }
      return pump();
    }).catch(function () { if (!done) finish(OFFLINE); });
  }

  // -- open/close and keys -----------------------------------------------------------------
  function show(open) {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.setAttribute("aria-label", (open ? "Close" : "Open") + " chat: " + title);
    store(sessionStorage, OKEY, open ? "1" : null);
    if (open) scroll();
  }
  function close() { show(false); bubble.focus(); }
  bubble.addEventListener("click", function () {
    if (!panel.hidden) return close();
    show(true);
    input.focus();
  });
  closeBtn.addEventListener("click", close);
  // Delete asks once more, then removes the conversation from the server and this page
  var armed = null;
  function disarm() { clearTimeout(armed); armed = null; delBtn.textContent = "Delete"; }
  delBtn.addEventListener("click", function () {
    if (!sessionId || busy) return;
    if (!armed) {
      delBtn.textContent = "Sure?";
      setStatus("Press \u201cSure?\u201d to delete this conversation for good.");
      armed = setTimeout(function () { disarm(); setStatus(""); }, 6000);
      return;
    }
    disarm();
    setBusy(true);
    api("/v1/sessions/" + encodeURIComponent(sessionId), { method: "DELETE" }).then(function (res) {
      if (!res.ok && res.status !== 404) return errorBody(res).then(function (b) { setStatus(friendly(res, b)); });
      forget();
      setHandoff(null);
      while (log.firstChild) log.removeChild(log.firstChild);
      lastTurn = 0; seen = {};
      setStatus("");
      note("Conversation deleted.");
      note(greeting);
    }).catch(function () { setStatus(OFFLINE); }).then(function () { setBusy(false); input.focus(); });
  });
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { e.preventDefault(); close(); }
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); go(); }
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); go(); });
  function go() {
    var text = input.value.trim();
    if (!text || busy) return;
    input.value = "";
    message("user", text);
    submit(text, false);
  }

  delBtn.hidden = !sessionId;
  show(!!load(sessionStorage, OKEY));
  note(greeting);
  if (sessionId) fetchTurns(0).catch(function () { setStatus(OFFLINE); });
})();
