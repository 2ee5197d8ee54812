namespace Modular.Agent.Ui;

/// <summary>The local UI's one page: status refreshed every two seconds and the lazy-connections switch.</summary>
internal static class UiPage
{
    public const string Html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Modular</title>
        <style>
          body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
          table { border-collapse: collapse; margin-top: 1em; }
          td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }
          .Connected { color: #17742a; } .Connecting { color: #a86b00; } .Idle { color: #666; }
          #error { color: #b00020; }
        </style>
        </head>
        <body>
        <h1>Modular</h1>
        <p id="summary">loading…</p>
        <p><label><input type="checkbox" id="lazy"> Lazy connections: peers stay idle until traffic for them appears</label>
           <span id="lazy-source"></span></p>
        <p id="error"></p>
        <table>
          <thead><tr><th>Peer</th><th>Overlay IP</th><th>State</th><th>Path or reason</th></tr></thead>
          <tbody id="peers"></tbody>
        </table>
        <script>
        const text = (tag, value, cls) => { const e = document.createElement(tag); e.textContent = value ?? ""; if (cls) e.className = cls; return e; };
        async function refresh() {
          try {
            const s = await (await fetch("/api/status", { cache: "no-store" })).json();
            const connected = s.peers.filter(p => p.state === "Connected").length;
            const idle = s.peers.filter(p => p.state === "Idle").length;
            document.getElementById("summary").textContent =
              `${s.interface.name} ${s.ip ?? ""} — management ${s.management.connected ? "connected" : "disconnected"}, ` +
              `signal ${s.signal.connected ? "connected" : "disconnected"} — peers ${connected}/${s.peers.length} connected, ${idle} idle`;
            const rows = s.peers.sort((a, b) => a.name.localeCompare(b.name)).map(p => {
              const row = document.createElement("tr");
              row.append(text("td", p.name), text("td", p.ip), text("td", p.state, p.state),
                         text("td", p.state === "Connected" ? p.connection_type : p.reason));
              return row;
            });
            document.getElementById("peers").replaceChildren(...rows);
            const settings = await (await fetch("/api/settings", { cache: "no-store" })).json();
            const box = document.getElementById("lazy");
            box.checked = settings.lazy_connections;
            box.disabled = !settings.editable;
            document.getElementById("lazy-source").textContent = `(set by ${settings.source})`;
          } catch (e) {
            document.getElementById("error").textContent = "the agent does not answer: " + e;
          }
        }
        document.getElementById("lazy").addEventListener("change", async e => {
          const reply = await fetch("/api/settings", { method: "PUT", headers: { "Content-Type": "application/json" },
                                                        body: JSON.stringify({ lazy_connections: e.target.checked }) });
          document.getElementById("error").textContent = reply.ok ? "" : (await reply.json()).error;
          refresh();
        });
        refresh();
        setInterval(refresh, 2000);
        </script>
        </body>
        </html>
        """;
}
