using Modular.Abstractions.Config;
using Modular.Abstractions.Flows;
using System.Globalization;
using System.Text;
using Modular.Abstractions.Peers;
using Modular.Core.Status;

namespace Modular.Agent.Cli;

/// <summary>
/// One line of the status: a label and its value, at the top level or nested under the line before it (a relay, a flow
/// sink, a route; those without a label are shown as their value alone). A header has a label and no value of its own.
/// </summary>
internal readonly record struct StatusRow(string? Label, string Value, bool Nested = false, bool Header = false);

/// <summary>One peer of `status -d`: its name, overlay IP, state and its labelled fields in the order the CLI prints them.</summary>
internal sealed record PeerView(string Name, string Ip, PeerConnectionState State, IReadOnlyList<StatusRow> Fields);

/// <summary>What `status` (or `status -d`) shows, as rows before it is laid out: the CLI prints it, the local UI renders it.</summary>
internal sealed record StatusView(IReadOnlyList<StatusRow> Rows, IReadOnlyList<PeerView> Peers);

/// <summary>The human form of `modular status` (summary) and `status -d` (every peer).</summary>
internal static class StatusText
{
    public static string Format(AgentStatus status, int peersTotal, int peersConnected, bool detail, DateTimeOffset now, int peersIdle = 0)
        => Render(Build(status, peersTotal, peersConnected, detail, now, peersIdle));

    /// <summary>The rows of `status` (and, with <paramref name="detail"/>, of `status -d` with every peer).</summary>
    public static StatusView Build(AgentStatus status, int peersTotal, int peersConnected, bool detail, DateTimeOffset now, int peersIdle = 0)
    {
        var rows = new List<StatusRow>();
        void Line(string label, string value) => rows.Add(new StatusRow(label, value));
        var i = status.Interface;
        Line("Interface", $"{i.Name} ({i.Mode}, port {i.Port}, mtu {i.Mtu})");
        Line("Public key", status.PublicKey);
        Line("Overlay IP", status.Ip ?? "(not assigned yet)");
        Line("Management", Service(status.Management));
        Line("Signal", Service(status.Signal));
        if (status.EngineRestarts > 0)
        {
            Line("Engine restarts", status.EngineRestarts.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        Line("Relays", $"{status.Relays.Count(r => r.Connected)}/{status.Relays.Count} connected");
        foreach (var relay in status.Relays)
        {
            rows.Add(new StatusRow(null, Service(relay), Nested: true));
        }

        var f = status.Features;
        Line("Lazy connections", (f.LazyConnections ? $"on (idle after {f.InactivityTimeout})" : "off") + $", source: {f.LazyConnectionsSource}");
        Line("Proxy", f.Proxy);
        Line("Force relay", f.ForceRelay ? "on" : "off");
        Line("Quantum resistance", Feature(f, "rosenpass", f.Rosenpass ? (f.RosenpassPermissive ? "on (permissive)" : "on") : "off"));
        Line("Flow logging", Feature(f, "netflow", f.Netflow ? Flows(status.Flows) : "off"));
        if (detail && f.Netflow)
        {
            foreach (var sink in status.Flows.Sinks)
            {
                rows.Add(new StatusRow($"Sink {sink.Name}", sink.Counters is { } counters ? Counts(counters) : "no counters (the sink does not report them)", Nested: true));
            }
        }
        foreach (var (feature, reason) in f.Unavailable.Where(u => u.Key is not ("rosenpass" or "netflow")))
        {
            Line(feature, $"requested, not available: {reason}");
        }

        if (status.Metrics.Listen.Length > 0 || detail)
        {
            Line("Metrics", Metrics(status.Metrics));
        }

        if (status.Ui.Listen.Length > 0 || detail)
        {
            Line("UI", Ui(status.Ui));
        }

        Line("Firewall", Firewall(status.Firewall));
        if (detail || status.Dns.Enabled)
        {
            Line("DNS", Dns(status.Dns));
        }

        if (detail && status.Routes.Count > 0)
        {
            rows.Add(new StatusRow("Routes", "", Header: true));
            foreach (var route in status.Routes)
            {
                rows.Add(new StatusRow(null, Route(route), Nested: true));
            }
        }
        else if (status.Routes.Count > 0)
        {
            Line("Routes", RouteSummary(status.Routes));
        }

        Line("Peers", peersIdle > 0 ? $"{peersConnected}/{peersTotal} connected, {peersIdle} idle" : $"{peersConnected}/{peersTotal} connected");

        var peers = new List<PeerView>();
        if (detail)
        {
            foreach (var peer in status.Peers.OrderBy(p => p.Name, StringComparer.Ordinal))
            {
                peers.Add(new PeerView(peer.Name, peer.Ip, peer.State,
                [
                    new("Public key", peer.PublicKey),
                    new("State", peer.State == PeerConnectionState.Connected || peer.Reason is null ? peer.State.ToString() : $"{peer.State}: {peer.Reason}"),
                    new("Connection", peer.ConnectionType?.ToString() ?? "-"),
                    new("ICE candidates", $"{peer.LocalCandidate ?? "-"} / {peer.RemoteCandidate ?? "-"}"),
                    new("Relay", peer.Relay ?? "-"),
                    new("Proxy", peer.Proxy ?? "-"),
                    new("Last state change", Ago(peer.LastStateChange, now)),
                    new("Last handshake", Ago(peer.LastHandshake, now)),
                    new("Transfer", $"{Bytes(peer.RxBytes)} received, {Bytes(peer.TxBytes)} sent"),
                    new("Latency", peer.LatencyMs is { } ms ? $"{ms.ToString("0.###", CultureInfo.InvariantCulture)} ms" : "-"),
                    new("Quantum resistance", peer.QuantumResistant ? $"yes, since {Ago(peer.QuantumResistantSince, now)}" : "no"),
                ]));
            }
        }

        return new StatusView(rows, peers);
    }

    /// <summary>Lays <paramref name="view"/> out as the CLI prints it: "Label:" padded to a column, nested rows indented, a block per peer.</summary>
    public static string Render(StatusView view)
    {
        var text = new StringBuilder();
        foreach (var row in view.Rows)
        {
            if (row.Label is null)
            {
                text.Append("  ").AppendLine(row.Value);
            }
            else if (row.Header)
            {
                text.Append(row.Label).AppendLine(":");
            }
            else if (row.Nested)
            {
                Field(text, row.Label, row.Value);
            }
            else
            {
                Line(text, row.Label, row.Value);
            }
        }

        foreach (var peer in view.Peers)
        {
            text.AppendLine();
            text.Append(' ').Append(peer.Name).Append(" (").Append(peer.Ip).AppendLine("):");
            foreach (var field in peer.Fields)
            {
                Field(text, field.Label!, field.Value);
            }
        }

        return text.ToString();
    }

    /// <summary>
    /// "requested, not available: why" when the feature was asked for but cannot be in effect (a reason that says who
    /// asked, "requested by the account, not available: why", or one that only waits for the first network map,
    /// "pending first network map (…)", as it is), else <paramref name="state"/>.
    /// </summary>
    private static string Feature(FeatureStatus features, string name, string state)
        => features.Unavailable.TryGetValue(name, out var reason)
            ? (reason.StartsWith("requested by the account, not available: ", StringComparison.Ordinal) || RosenpassAvailability.IsPending(reason) ? reason : $"requested, not available: {reason}")
            : state;

    /// <summary>"on, to netflow: 12 recorded, 10 sent, 10 acknowledged, 0 dropped, 0 exported" (counts summed over the sinks that report them), and the first sink's error.</summary>
    private static string Flows(FlowStatus flows)
    {
        var line = new StringBuilder("on");
        if (flows.Sinks.Count == 0)
        {
            return line.ToString();
        }

        line.Append(", to ").Append(string.Join(", ", flows.Sinks.Select(s => s.Name)));
        var counted = flows.Sinks.Where(s => s.Counters is not null).Select(s => s.Counters!.Value).ToList();
        if (counted.Count > 0)
        {
            var total = new FlowSinkCounters(
                counted.Sum(c => c.Recorded), counted.Sum(c => c.Sent), counted.Sum(c => c.Acknowledged), counted.Sum(c => c.Dropped), counted.Sum(c => c.Exported),
                counted.Select(c => c.LastError).FirstOrDefault(e => e is not null));
            line.Append(": ").Append(Counts(total));
        }

        return line.ToString();
    }

    /// <summary>"12 recorded, 10 sent, 10 acknowledged, 0 dropped, 0 exported", and "; error: why" while shipping fails.</summary>
    private static string Counts(FlowSinkCounters counters)
    {
        var line = string.Create(CultureInfo.InvariantCulture,
            $"{counters.Recorded} recorded, {counters.Sent} sent, {counters.Acknowledged} acknowledged, {counters.Dropped} dropped, {counters.Exported} exported");
        return counters.LastError is { } error ? $"{line}; error: {error}" : line;
    }

    /// <summary>One line: mode, rules, drops (by rule only when a rule dropped something), and any apply error.</summary>
    private static string Firewall(FirewallStatus firewall)
    {
        if (firewall.Mode == FirewallStatus.OffMode)
        {
            return "off";
        }

        var line = new StringBuilder();
        line.Append(firewall.Mode).Append(", ").Append(firewall.Rules).Append(firewall.Rules == 1 ? " rule, " : " rules, ")
            .Append(firewall.TotalDrops).Append(" dropped (default ").Append(firewall.DefaultDrops);
        foreach (var (ruleId, drops) in firewall.DropsByRule.Where(pair => pair.Value > 0).OrderByDescending(pair => pair.Value).Take(3))
        {
            line.Append(", ").Append(ruleId).Append(' ').Append(drops);
        }

        line.Append(')');
        if (firewall.ActiveFlows is { } flows)
        {
            line.Append(", ").Append(flows).Append(" flows");
        }

        if (firewall.Error is { } error)
        {
            line.Append("; ").Append(error);
        }

        return line.ToString();
    }

    /// <summary>"10.20.0.0/24 → router-a (lan), client, installed" or "…, not installed: lost to route lan-b (metric 10)".</summary>
    private static string Route(RouteStatus route)
    {
        var line = new StringBuilder();
        line.Append(route.Network).Append(" → ").Append(route.Peer.Length > 0 ? route.Peer : "(unknown peer)");
        if (route.Name.Length > 0)
        {
            line.Append(" (").Append(route.Name).Append(')');
        }

        line.Append(", ").Append(route.Role);
        if (route.ExitNode)
        {
            line.Append(", exit node");
        }

        if (route.Masquerade)
        {
            line.Append(", masquerade");
        }

        line.Append(", metric ").Append(route.Metric.ToString(CultureInfo.InvariantCulture));
        line.Append(route.Installed ? ", installed" : $", not installed: {route.Reason ?? "no reason given"}");
        return line.ToString();
    }

    /// <summary>"3 routes: 2 installed (1 serving), 1 not installed", plus "exit node via X" when one is in use.</summary>
    private static string RouteSummary(IReadOnlyList<RouteStatus> routes)
    {
        var installed = routes.Count(r => r.Installed);
        var serving = routes.Count(r => r.Installed && r.Role == RouteStatus.ServingRole);
        var line = new StringBuilder();
        line.Append(routes.Count).Append(routes.Count == 1 ? " route: " : " routes: ").Append(installed).Append(" installed");
        if (serving > 0)
        {
            line.Append(" (").Append(serving).Append(" serving)");
        }

        if (routes.Count > installed)
        {
            line.Append(", ").Append(routes.Count - installed).Append(" not installed");
        }

        if (routes.FirstOrDefault(r => r.ExitNode && r.Installed && r.Role == RouteStatus.ClientRole) is { } exit)
        {
            line.Append(", exit node via ").Append(exit.Peer);
        }

        return line.ToString();
    }

    /// <summary>Where it listens, what it serves, and the query counters on one line.</summary>
    private static string Dns(DnsStatus dns)
    {
        if (!dns.Enabled)
        {
            return "off";
        }

        return string.Create(CultureInfo.InvariantCulture,
            $"{(dns.Listening is { } at ? $"listening on {at}" : "not listening")}, zone {(dns.Zone.Length > 0 ? dns.Zone : "(none)")}, {dns.Records} records, " +
            $"{dns.NameserverGroups} nameserver group{(dns.NameserverGroups == 1 ? "" : "s")}; {dns.Queries} queries " +
            $"({dns.AnsweredLocally} local, {dns.Forwarded} forwarded, {dns.Nxdomain} nxdomain, {dns.Refused} refused, {dns.Servfail} servfail, {dns.Malformed} malformed)");
    }

    private static string Service(ServiceStatus service)
    {
        var url = service.Url.Length > 0 ? service.Url : "(unknown)";
        // Connected with an error: a warning from the service (e.g. management refused a copy of this agent's identity).
        return service.Connected
            ? (service.Error is { Length: > 0 } warning ? $"Connected, {url} (warning: {warning})" : $"Connected, {url}")
            : $"Disconnected, {url}: {service.Error ?? "no reason given"}";
    }

    private static void Line(StringBuilder text, string label, string value)
        => text.Append(label).Append(':').Append(' ', Math.Max(1, 20 - label.Length)).AppendLine(value);

    private static void Field(StringBuilder text, string label, string value)
        => text.Append("  ").Append(label).Append(':').Append(' ', Math.Max(1, 20 - label.Length)).AppendLine(value);

    private static string Ago(DateTimeOffset? time, DateTimeOffset now)
    {
        if (time is not { } t)
        {
            return "-";
        }

        var utc = t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);
        var age = now - t;
        return age < TimeSpan.Zero ? utc : $"{utc} ({ConfigDuration.Format(TimeSpan.FromSeconds(Math.Floor(age.TotalSeconds)))} ago)";
    }

    private static string Bytes(long bytes) => bytes switch
    {
        < 1024 => $"{bytes} B",
        < 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:0.#} KiB"),
        < 1024L * 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024):0.#} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024 * 1024):0.##} GiB"),
    };

    private static string Metrics(EndpointStatus metrics)
        => metrics.Serving ? $"on, http://{metrics.Listen}/metrics"
            : metrics.Warning is { } warning ? $"not serving: {warning}"
            : metrics.Listen.Length > 0 ? $"starting on {metrics.Listen}"
            : "off";

    private static string Ui(EndpointStatus ui)
        => ui.Serving ? $"on, http://{ui.Listen}/ (sign in with `modular ui`)"
            : ui.Warning is { } warning ? $"not serving: {warning}"
            : ui.Listen.Length > 0 ? $"starting on {ui.Listen}"
            : "off";
}
