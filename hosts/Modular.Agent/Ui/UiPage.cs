namespace Modular.Agent.Ui;

/// <summary>
/// The local UI's one page: what `status -d` shows (from <c>/api/view</c>, worded by the CLI's own
/// <see cref="Cli.StatusText"/>), refreshed every two seconds, and the lazy-connections switch. Every value from the
/// agent goes into the page as text (<c>textContent</c>), never as markup: a peer named <c>&lt;img onerror=…&gt;</c>
/// shows as that name. Rows and cells carry <c>data-peer</c>/<c>data-state</c> for tests and user scripts.
/// </summary>
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
          table { border-collapse: collapse; margin-top: .5em; }
          td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
          #status th { font-weight: 600; } #status tr.nested td:first-child { padding-left: 2em; }
          #peers td { white-space: nowrap; }
          .Connected { color: #17742a; } .Connecting { color: #a86b00; } .Idle { color: #666; } .Disconnected { color: #b00020; }
          #error { color: #b00020; }
        </style>
        </head>
        <body>
        <h1>Modular</h1>
        <p><label><input type="checkbox" id="lazy"> Lazy connections: peers stay idle until traffic for them appears</label>
           <span id="lazy-source"></span></p>
        <p id="error"></p>
        <h2>Status</h2>
        <table id="status"><tbody id="rows"><tr><td>loading…</td></tr></tbody></table>
        <h2>Peers</h2>
        <table>
          <thead><tr id="peer-head"></tr></thead>
          <tbody id="peers"></tbody>
        </table>
        <script>
        // Text only: every value lands in textContent, so nothing the agent reports (peer names included) becomes markup.
        const cell = (tag, value, cls) => { const e = document.createElement(tag); e.textContent = value ?? ""; if (cls) e.className = cls; return e; };
        async function json(path) {
          const reply = await fetch(path, { cache: "no-store" });
          const body = await reply.json();
          if (!reply.ok) throw new Error(body.error ?? reply.status);
          return body;
        }
        async function refresh() {
          try {
            const view = await json("/api/view");
            document.getElementById("rows").replaceChildren(...view.rows.map(r => {
              const row = document.createElement("tr");
              if (r.nested) row.className = "nested";
              row.append(cell(r.label === null || r.nested ? "td" : "th", r.label), cell("td", r.value));
              return row;
            }));
            const labels = view.peers.length > 0 ? view.peers[0].fields.map(f => f.label) : [];
            document.getElementById("peer-head").replaceChildren(...["Peer", "Overlay IP", ...labels].map(l => cell("th", l)));
            document.getElementById("peers").replaceChildren(...view.peers.map(p => {
              const row = document.createElement("tr");
              row.dataset.peer = p.name;
              row.dataset.state = p.state;
              row.append(cell("td", p.name), cell("td", p.ip),
                         ...p.fields.map(f => cell("td", f.value, f.label === "State" ? "state " + p.state : null)));
              return row;
            }));
            const settings = await json("/api/settings");
            const box = document.getElementById("lazy");
            box.checked = settings.lazy_connections;
            box.disabled = !settings.editable;
            document.getElementById("lazy-source").textContent = `(set by ${settings.source})`;
            document.getElementById("error").textContent = "";
          } catch (e) {
            document.getElementById("error").textContent = "the agent does not answer: " + e.message;
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
