/* popgate challenge page (served from popgate itself: the page's CSP allows no inline script).
 *
 * Reads its settings from <script type="application/json" id="popgate-data">:
 * {return, worker, messages, puzzle?: {challenge, bits, subs, expires, submit},
 *  worldid?: {app_id, action, signal, verification_level, endpoint, bridge_url, script,
 *            idkit4?: {app_id, action, rp_context, rp_context_from, allow_legacy_proofs, environment,
 *                      script, qrcode}}}.
 * - puzzle: solved in a Web Worker (challenge-worker.js), the answer POSTed, then back to `return`;
 * - World ID with IDKit 4 (the offer carries an rp_context): loads the vendored
 *   @worldcoin/idkit-core 4 and qrcode-generator on demand, starts the request, draws the
 *   connect URL as a QR code (canvas) plus a link for phones, polls the bridge through the SDK,
 *   and POSTs the result to the exchange endpoint (a session cookie comes back), then back to
 *   `return`; a refusal is shown in words. Without an rp_context: the IDKit 2 widget, as before;
 * - copy buttons for the code snippets.
 */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var data = JSON.parse(document.getElementById("popgate-data").textContent);
  var msg = data.messages;
  var worker = null;

  function fmt(key, values) {
    return msg[key].replace(/\{([a-z_]+)\}/g, function (m, k) { return values && k in values ? values[k] : m; });
  }
  function localPath(p) {
    return typeof p === "string" && p.charAt(0) === "/" && p.charAt(1) !== "/" && p.charAt(1) !== "\\" ? p : "/";
  }
  function goBack() { location.replace(localPath(data.return)); }

  function startPuzzle(pz) {
    var bar = document.getElementById("popgate-progress");
    var status = document.getElementById("popgate-status");
    var retry = document.getElementById("popgate-retry");
    var expected = pz.subs * Math.pow(2, pz.bits);
    var lastSpoken = 0;
    function say(text, force) {            // aria-live: not more than every 3 s
      var now = Date.now();
      if (force || now - lastSpoken > 3000) { status.textContent = text; lastSpoken = now; }
    }
    function fail(text) { say(text, true); retry.hidden = false; retry.focus(); }
    retry.addEventListener("click", function () { location.reload(); });
    say(msg.starting, true);
    if (!window.Worker) { fail(msg.no_worker); return; }
    if (Date.now() / 1000 > pz.expires) { fail(msg.expired); return; }
    worker = new Worker(data.worker);
    var started = Date.now();
    worker.onmessage = function (ev) {
      var m = ev.data;
      if (m.type === "progress") {
        var pct = Math.min(99, Math.round(100 * m.hashes / expected));
        bar.value = pct; bar.textContent = pct + "%";
        say(fmt("working", { pct: pct }));
      } else if (m.type === "done") {
        bar.value = 100; bar.textContent = "100%";
        say(fmt("done", { secs: ((Date.now() - started) / 1000).toFixed(1) }), true);
        submit(m.nonces);
      } else {
        fail(fmt("failed", { message: m.message }));
      }
    };
    worker.onerror = function () { fail(msg.no_worker); };
    worker.postMessage({ challenge: pz.challenge, bits: pz.bits, subs: pz.subs });

    function submit(nonces) {
      fetch(pz.submit, {
        method: "POST", credentials: "same-origin", redirect: "follow",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ solution: pz.challenge + ":" + nonces.join(","), return_to: data.return })
      }).then(function (resp) {
        if (!resp.ok) { fail(fmt("not_accepted", { status: resp.status })); return; }
        goBack();
      }, function () { fail(msg.network_error); });
    }
  }

  var PROVE_MESSAGES = {
    nullifier_reused: "prove_reused", invalid_proof: "prove_refused", wrong_action: "prove_refused",
    unknown_root: "prove_refused", verification_level: "prove_refused", signal_not_allowed: "prove_refused",
    rate_limited: "prove_rate_limited", overloaded: "prove_busy", verifier_unavailable: "prove_busy",
    chain_unavailable: "prove_busy", credential_expired: "prove_refused", unknown_issuer: "prove_refused",
    unknown_rp: "prove_refused", invalid_nonce: "prove_refused", unsupported_protocol: "prove_refused"
  };

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src; s.onload = resolve; s.onerror = reject;
      document.head.appendChild(s);
    });
  }

  function drawQr(canvas, text) {          // qrcode-generator: type 0 = smallest that fits
    var qr = window.qrcode(0, "M");
    qr.addData(text); qr.make();
    var n = qr.getModuleCount(), quiet = 4, scale = Math.max(3, Math.floor(264 / (n + 2 * quiet)));
    var size = (n + 2 * quiet) * scale, g = canvas.getContext("2d");
    canvas.width = size; canvas.height = size;
    g.fillStyle = "#fff"; g.fillRect(0, 0, size, size); g.fillStyle = "#000";
    for (var r = 0; r < n; r++) {
      for (var c = 0; c < n; c++) if (qr.isDark(r, c)) g.fillRect((c + quiet) * scale, (r + quiet) * scale, scale, scale);
    }
  }

  function showConnect(box, uri) {
    var p = document.createElement("p"), canvas = document.createElement("canvas");
    var link = document.createElement("a");
    p.textContent = msg.prove_scan;
    canvas.id = "popgate-qr"; canvas.setAttribute("role", "img"); canvas.setAttribute("aria-label", msg.prove_qr);
    drawQr(canvas, uri);
    link.href = uri; link.rel = "noopener noreferrer"; link.textContent = msg.prove_open;
    var lp = document.createElement("p"); lp.appendChild(link);
    box.textContent = ""; box.appendChild(p); box.appendChild(canvas); box.appendChild(lp);
    box.hidden = false;
  }

  function setupWorldId4(w, k) {
    var button = document.getElementById("popgate-worldid");
    var status = document.getElementById("popgate-prove-status");
    var box = document.getElementById("popgate-connect");
    var busy = false;
    function rpContext() {
      if (k.rp_context) return Promise.resolve(k);
      return fetch(k.rp_context_from, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (b) { return b.idkit; });
    }
    function exchange(result) {
      return fetch(w.endpoint, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ result: result, signal: w.signal })
      }).then(function (resp) {
        box.hidden = true;
        if (resp.ok) { status.textContent = msg.prove_ok; goBack(); return; }
        return resp.json().catch(function () { return {}; }).then(function (body) {
          status.textContent = msg[PROVE_MESSAGES[body && body.reason] || "prove_failed"];
          button.focus();
        });
      }, function () { status.textContent = msg.network_error; });
    }
    button.addEventListener("click", function () {
      if (busy) return;
      busy = true;
      if (worker) { worker.terminate(); worker = null; document.getElementById("popgate-status").textContent = msg.prove_paused; }
      status.textContent = msg.prove_loading;
      Promise.all([loadScript(k.script), loadScript(k.qrcode), rpContext()]).then(function (got) {
        var IDK = window.IDKit, req = got[2];
        var preset = req.allow_legacy_proofs ? IDK.orbLegacy({}) : IDK.proofOfHuman({});
        return IDK.request({
          app_id: req.app_id, action: req.action, rp_context: req.rp_context, environment: k.environment,
          allow_legacy_proofs: !!req.allow_legacy_proofs, bridge_url: w.bridge_url
        }).preset(preset);
      }).then(function (request) {
        showConnect(box, request.connectorURI);
        status.textContent = msg.prove_waiting;
        return request.pollUntilCompletion({ pollInterval: 1000, timeout: 900000 });
      }).then(function (done) {
        if (!done.success) { box.hidden = true; status.textContent = msg.prove_failed; return; }
        return exchange(done.result);
      }).catch(function (e) {
        box.hidden = true; status.textContent = msg.prove_failed;
        if (window.console) console.warn("popgate: World ID: " + (e && e.message ? e.message : e));
      })
        .then(function () { busy = false; });
    });
  }

  function setupWorldId(w) {
    if (w.idkit4) { setupWorldId4(w, w.idkit4); return; }
    var button = document.getElementById("popgate-worldid");
    var status = document.getElementById("popgate-prove-status");
    var loaded = null;
    function load() {
      if (!loaded) {
        loaded = new Promise(function (resolve, reject) {
          var s = document.createElement("script");
          s.src = w.script; s.onload = resolve; s.onerror = reject;
          document.head.appendChild(s);
        });
      }
      return loaded;
    }
    function exchange(result) {
      return fetch(w.endpoint, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ result: result, signal: w.signal })
      }).then(function (resp) {
        if (resp.ok) { status.textContent = msg.prove_ok; goBack(); return; }
        return resp.json().catch(function () { return {}; }).then(function (body) {
          var text = msg[PROVE_MESSAGES[body && body.reason] || "prove_failed"];
          status.textContent = text;
          // the widget would only say "declined": close it so the sentence above is what shows
          setTimeout(function () { window.IDKit.close().catch(function () {}); button.focus(); }, 0);
          throw new Error(text);
        });
      }, function () { status.textContent = msg.network_error; throw new Error(msg.network_error); });
    }
    button.addEventListener("click", function () {
      if (worker) { worker.terminate(); worker = null; document.getElementById("popgate-status").textContent = msg.prove_paused; }
      status.textContent = msg.prove_loading;
      load().then(function () {
        if (!window.IDKit.isInitialized) {
          window.IDKit.init({
            app_id: w.app_id, action: w.action, signal: w.signal, bridge_url: w.bridge_url,
            verification_level: w.verification_level, handleVerify: exchange, onSuccess: function () {}
          });
        }
        status.textContent = "";
        return window.IDKit.open();
      }).catch(function () { if (!status.textContent) status.textContent = msg.prove_failed; });
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("button.copy"), function (b) {
    b.addEventListener("click", function () {
      var code = document.getElementById(b.getAttribute("data-copy")).textContent;
      var done = function () { var old = b.textContent; b.textContent = msg.copied; setTimeout(function () { b.textContent = old; }, 1500); };
      if (navigator.clipboard) navigator.clipboard.writeText(code).then(done, function () {});
    });
  });
  if (data.worldid) setupWorldId(data.worldid);
  if (data.puzzle) startPuzzle(data.puzzle);
})();
