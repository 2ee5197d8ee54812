using Google.Protobuf;
using System.Text.Json;
using Modular.Agent.Cli;
using Modular.Agent.Status;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>The "routes" and "dns" objects of status: their JSON names, their trip across the daemon socket, their text.</summary>
public sealed class RouteDnsStatusTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 25, 14, 0, 0, TimeSpan.Zero);

    private static readonly RouteStatus Lan = new("r1", "lan", "10.20.0.0/24", "router-a.modular.internal", RouteStatus.ClientRole, false, true, null, true, 100);

    private static readonly RouteStatus LostLan = new("r2", "lan-ha", "10.20.0.0/24", "router-b.modular.internal", RouteStatus.ClientRole, false, false, "lost to route lan (metric 100)", true, 200);

    private static readonly RouteStatus Exit = new("r3", "exit", "0.0.0.0/0", RouteStatus.SelfPeer, RouteStatus.ServingRole, true, true, null, true, 9999);

    private static readonly DnsStatus Listening = new(true, "100.64.0.1:53", "modular.internal", 4, 1, 12, 7, 4, 2, 1, 1, 0);

    private static AgentStatus StatusWith(IReadOnlyList<RouteStatus> routes, DnsStatus dns) => new StatusRecorder(
        new InterfaceStatus("mdl0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        new string('k', 43) + "=",
        new ServiceStatus("https://m", true, null),
        new ServiceStatus("https://s", true, null)).Snapshot() with { Routes = routes, Dns = dns };

    [Fact]
    public void The_recorder_publishes_what_it_was_given()
    {
        var recorder = new StatusRecorder(
            new InterfaceStatus("mdl0", "userspace", 51820, 1280),
            new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
            "key",
            new ServiceStatus("https://m", true, null),
            new ServiceStatus("https://s", true, null));
        Assert.Empty(recorder.Snapshot().Routes);
        Assert.Equal(DnsStatus.Off, recorder.Snapshot().Dns);

        recorder.SetRoutes([Lan, Exit]);
        recorder.SetDns(Listening);

        Assert.Equal([Lan, Exit], recorder.Snapshot().Routes);
        Assert.Equal(Listening, recorder.Snapshot().Dns);
    }

    [Fact]
    public void Json_has_a_routes_array_with_snake_case_names_and_a_reason_only_when_not_installed()
    {
        var routes = JsonDocument.Parse(StatusJson.Serialize(StatusWith([Lan, LostLan, Exit], Listening))).RootElement.GetProperty("routes");

        Assert.Equal(3, routes.GetArrayLength());
        var lan = routes[0];
        Assert.Equal("r1", lan.GetProperty("id").GetString());
        Assert.Equal("lan", lan.GetProperty("name").GetString());
        Assert.Equal("10.20.0.0/24", lan.GetProperty("network").GetString());
        Assert.Equal("router-a.modular.internal", lan.GetProperty("peer").GetString());
        Assert.Equal("client", lan.GetProperty("role").GetString());
        Assert.False(lan.GetProperty("exit_node").GetBoolean());
        Assert.True(lan.GetProperty("installed").GetBoolean());
        Assert.Equal(JsonValueKind.Null, lan.GetProperty("reason").ValueKind);
        Assert.True(lan.GetProperty("masquerade").GetBoolean());
        Assert.Equal(100, lan.GetProperty("metric").GetInt32());
        Assert.False(routes[1].GetProperty("installed").GetBoolean());
        Assert.Equal("lost to route lan (metric 100)", routes[1].GetProperty("reason").GetString());
        Assert.Equal("self", routes[2].GetProperty("peer").GetString());
        Assert.Equal("serving", routes[2].GetProperty("role").GetString());
        Assert.True(routes[2].GetProperty("exit_node").GetBoolean());
    }

    [Fact]
    public void Json_has_the_dns_object_with_its_counters()
    {
        var dns = JsonDocument.Parse(StatusJson.Serialize(StatusWith([], Listening))).RootElement.GetProperty("dns");

        Assert.True(dns.GetProperty("enabled").GetBoolean());
        Assert.Equal("100.64.0.1:53", dns.GetProperty("listening").GetString());
        Assert.Equal("modular.internal", dns.GetProperty("zone").GetString());
        Assert.Equal(4, dns.GetProperty("records").GetInt32());
        Assert.Equal(1, dns.GetProperty("nameserver_groups").GetInt32());
        Assert.Equal(12, dns.GetProperty("queries").GetInt64());
        Assert.Equal(7, dns.GetProperty("answered_locally").GetInt64());
        Assert.Equal(4, dns.GetProperty("forwarded").GetInt64());
        Assert.Equal(2, dns.GetProperty("nxdomain").GetInt64());
        Assert.Equal(1, dns.GetProperty("refused").GetInt64());
        Assert.Equal(1, dns.GetProperty("servfail").GetInt64());
        Assert.Equal(0, dns.GetProperty("malformed").GetInt64());

        var off = JsonDocument.Parse(StatusJson.Serialize(StatusWith([], DnsStatus.Off))).RootElement;
        Assert.False(off.GetProperty("dns").GetProperty("enabled").GetBoolean());
        Assert.Equal(JsonValueKind.Null, off.GetProperty("dns").GetProperty("listening").ValueKind);
        Assert.Equal(0, off.GetProperty("routes").GetArrayLength());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Routes_and_dns_survive_the_trip_across_the_daemon_socket(bool detail)
    {
        var status = StatusWith([Lan, LostLan, Exit], Listening);

        var wire = StatusMapping.ToReply(status, includePeers: detail).ToByteArray();
        var back = StatusMapping.FromReply(Protocol.StatusReply.Parser.ParseFrom(wire));

        Assert.Equal(StatusJson.Serialize(status), StatusJson.Serialize(back));
    }

    [Fact]
    public void A_reply_from_a_daemon_without_them_reads_as_no_routes_and_dns_off()
    {
        var reply = StatusMapping.ToReply(StatusWith([Lan], Listening), includePeers: false);
        reply.Routes.Clear();
        reply.Dns = null;

        var back = StatusMapping.FromReply(reply);

        Assert.Empty(back.Routes);
        Assert.Equal(DnsStatus.Off, back.Dns);
    }

    [Fact]
    public void Status_detail_has_a_routes_block_and_one_dns_line()
    {
        var lines = StatusText.Format(StatusWith([Lan, LostLan, Exit], Listening), 0, 0, detail: true, Now).Split('\n');

        var block = Array.IndexOf(lines, "Routes:");
        Assert.True(block > 0);
        Assert.Equal("  10.20.0.0/24 → router-a.modular.internal (lan), client, masquerade, metric 100, installed", lines[block + 1]);
        Assert.Equal("  10.20.0.0/24 → router-b.modular.internal (lan-ha), client, masquerade, metric 200, not installed: lost to route lan (metric 100)", lines[block + 2]);
        Assert.Equal("  0.0.0.0/0 → self (exit), serving, exit node, masquerade, metric 9999, installed", lines[block + 3]);
        Assert.Equal(
            "DNS:                 listening on 100.64.0.1:53, zone modular.internal, 4 records, 1 nameserver group; 12 queries (7 local, 4 forwarded, 2 nxdomain, 1 refused, 1 servfail, 0 malformed)",
            Assert.Single(lines, l => l.StartsWith("DNS:", StringComparison.Ordinal)));
        Assert.Contains("DNS:                 off", StatusText.Format(StatusWith([], DnsStatus.Off), 0, 0, detail: true, Now), StringComparison.Ordinal);
    }

    [Fact]
    public void Plain_status_summarises_each_in_one_line_and_only_when_there_is_something()
    {
        var text = StatusText.Format(StatusWith([Lan, LostLan, Exit], Listening), 0, 0, detail: false, Now);

        Assert.Contains("\nRoutes:              3 routes: 2 installed (1 serving), 1 not installed\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("\n  10.20.0.0/24", text, StringComparison.Ordinal);
        Assert.Contains("\nDNS:                 listening on 100.64.0.1:53,", text, StringComparison.Ordinal);

        var empty = StatusText.Format(StatusWith([], DnsStatus.Off), 0, 0, detail: false, Now);
        Assert.DoesNotContain("Routes:", empty, StringComparison.Ordinal);
        Assert.DoesNotContain("DNS:", empty, StringComparison.Ordinal);

        var exitClient = Exit with { Peer = "gw.modular.internal", Role = RouteStatus.ClientRole };
        Assert.Contains("Routes:              1 route: 1 installed, exit node via gw.modular.internal", StatusText.Format(StatusWith([exitClient], DnsStatus.Off), 0, 0, detail: false, Now), StringComparison.Ordinal);
    }
}
