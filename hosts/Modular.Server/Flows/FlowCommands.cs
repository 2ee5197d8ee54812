using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Modular.Abstractions.Config;
using Modular.Abstractions.Flows;
using Modular.Server.Cli;

namespace Modular.Server.Flows;

/// <summary>`modular-server flows list`: the flow events agents shipped, from the store (Redis only caches).</summary>
internal static class FlowCommands
{
    /// <summary>How many events `flows list` prints unless --limit says otherwise.</summary>
    public const int DefaultLimit = 1000;

    public static void AddTo(RootCommand root, Option<string> config, CliDefaults defaults)
    {
        var peer = new Option<string>("--peer") { Description = "Only this peer's flows: name, name.zone, overlay IP or public key" };
        var since = new Option<string>("--since") { Description = "Only events of the last DURATION, e.g. 10m, 24h, 7d; default: every stored event" };
        var limit = new Option<int>("--limit") { Description = $"Print at most the newest N events (default {DefaultLimit})", DefaultValueFactory = _ => DefaultLimit };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List flow events agents shipped (oldest first; the newest --limit of them)") { peer, since, limit, json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            DateTimeOffset? from = null;
            if (parse.GetValue(since) is { Length: > 0 } text)
            {
                if (!ConfigDuration.TryParse(text, out var d) || d <= TimeSpan.Zero)
                {
                    return ServerCli.Usage($"--since: expected a duration such as 10m, 24h or 7d, got '{text}'");
                }

                from = DateTimeOffset.UtcNow - d;
            }

            var max = parse.GetValue(limit);
            if (max <= 0)
            {
                return ServerCli.Usage($"--limit: expected 1 or more, got {max}");
            }

            IReadOnlyList<StoredFlowEvent> events;
            try
            {
                events = await store.ListFlowEventsAsync(parse.GetValue(peer), from, max, ct);
            }
            catch (KeyNotFoundException e)
            {
                return ServerCli.Fail(e.Message);
            }

            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(events.Select(Json), ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"TIME",-20} {"PEER",-16} {"TYPE",-5} {"DIR",-3} {"PROTO",-6} {"SOURCE",-28} {"DESTINATION",-28} {"RX PKT/BYTES",-16} {"TX PKT/BYTES",-16} RULE");
            foreach (var s in events)
            {
                var e = s.Event;
                Console.Out.WriteLine(
                    $"{ServerCli.Iso(e.Timestamp),-20} {s.PeerName,-16} {Type(e.Type),-5} {(e.Direction == FlowDirection.Ingress ? "in" : "out"),-3} {Protocol(e.Protocol),-6} "
                    + $"{Endpoint(e, source: true),-28} {Endpoint(e, source: false),-28} {$"{e.RxPackets}/{e.RxBytes}",-16} {$"{e.TxPackets}/{e.TxBytes}",-16} {e.RuleId ?? "-"}");
            }

            if (events.Count == max)
            {
                Console.Error.WriteLine($"showing the newest {max} events; pass --limit or --since to see others");
            }

            return 0;
        }, ct));

        root.Add(new Command("flows", "Flow events agents recorded (who talked to whom, which rule allowed or dropped it)") { list });
    }

    /// <summary>"tcp", "udp", "icmp", "icmpv6" or the protocol number.</summary>
    internal static string Protocol(byte protocol) => protocol switch
    {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        _ => protocol.ToString(CultureInfo.InvariantCulture),
    };

    private static string Type(FlowEventType type) => type.ToString().ToLowerInvariant();

    /// <summary>address:port, [v6]:port; ICMP shows the address with its type/code on the destination.</summary>
    private static string Endpoint(FlowEvent e, bool source)
    {
        var address = source ? e.SourceAddress : e.DestinationAddress;
        var text = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
        if (e.Protocol is 1 or 58)
        {
            return source ? text : $"{text} type {e.IcmpType}/{e.IcmpCode}";
        }

        return $"{text}:{(source ? e.SourcePort : e.DestinationPort)}";
    }

    private static object Json(StoredFlowEvent s) => new
    {
        s.Event.Id,
        s.Event.FlowId,
        Time = s.Event.Timestamp.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture),
        Peer = s.PeerName,
        PeerIp = s.PeerAddress.ToString(),
        Type = Type(s.Event.Type),
        Direction = s.Event.Direction == FlowDirection.Ingress ? "ingress" : "egress",
        Protocol = Protocol(s.Event.Protocol),
        Source = s.Event.SourceAddress.ToString(),
        s.Event.SourcePort,
        Destination = s.Event.DestinationAddress.ToString(),
        s.Event.DestinationPort,
        s.Event.IcmpType,
        s.Event.IcmpCode,
        s.Event.RxPackets,
        s.Event.RxBytes,
        s.Event.TxPackets,
        s.Event.TxBytes,
        s.Event.RuleId,
        s.Event.SourceResourceId,
        s.Event.DestinationResourceId,
        ReceivedAt = ServerCli.Iso(s.ReceivedAt),
    };
}
