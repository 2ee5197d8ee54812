using Google.Protobuf;
using System.Collections.Immutable;
using System.Text.Json;
using Modular.Agent.Cli;
using Modular.Agent.Status;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>The "firewall" object of status: its JSON names, its trip across the daemon socket, its status -d line.</summary>
public sealed class FirewallStatusTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 25, 14, 0, 0, TimeSpan.Zero);

    private static readonly FirewallStatus Nftables = new(
        FirewallStatus.NftablesMode, 3, ImmutableSortedDictionary.CreateRange(StringComparer.Ordinal, [KeyValuePair.Create("no-ssh", 4L), KeyValuePair.Create("quiet", 0L)]),
        7, 1, null, null, null, null, null);

    private static readonly FirewallStatus Userspace = new(
        FirewallStatus.UserspaceMode, 1, ImmutableSortedDictionary<string, long>.Empty, 2, 0, 1, 0, 0, 5, null);

    private static AgentStatus StatusWith(FirewallStatus firewall) => new StatusRecorder(
        new InterfaceStatus("mdl0", "kernel", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        new string('k', 43) + "=",
        new ServiceStatus("https://m", true, null),
        new ServiceStatus("https://s", true, null)).Snapshot() with { Firewall = firewall };

    [Fact]
    public void Json_has_the_firewall_object_with_snake_case_names_and_nulls_for_counters_the_mode_lacks()
    {
        var firewall = JsonDocument.Parse(StatusJson.Serialize(StatusWith(Nftables))).RootElement.GetProperty("firewall");

        Assert.Equal("nftables", firewall.GetProperty("mode").GetString());
        Assert.Equal(3, firewall.GetProperty("rules").GetInt32());
        Assert.Equal(4, firewall.GetProperty("drops_by_rule").GetProperty("no-ssh").GetInt64());
        Assert.Equal(7, firewall.GetProperty("default_drops").GetInt64());
        Assert.Equal(1, firewall.GetProperty("invalid_drops").GetInt64());
        Assert.Equal(JsonValueKind.Null, firewall.GetProperty("malformed_drops").ValueKind);
        Assert.Equal(JsonValueKind.Null, firewall.GetProperty("active_flows").ValueKind);
        Assert.Equal(JsonValueKind.Null, firewall.GetProperty("error").ValueKind);
        Assert.Equal(12, firewall.GetProperty("total_drops").GetInt64());
    }

    [Fact]
    public void A_fresh_recorder_says_off()
        => Assert.Equal("off", JsonDocument.Parse(StatusJson.Serialize(StatusWith(FirewallStatus.Off))).RootElement.GetProperty("firewall").GetProperty("mode").GetString());

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Firewall_status_survives_the_trip_across_the_daemon_socket(bool nftables)
    {
        var status = StatusWith(nftables ? Nftables : Userspace with { Error = "nft refused" });

        var wire = StatusMapping.ToReply(status, includePeers: false).ToByteArray();
        var back = StatusMapping.FromReply(Protocol.StatusReply.Parser.ParseFrom(wire));

        Assert.Equal(StatusJson.Serialize(status), StatusJson.Serialize(back));
    }

    [Fact]
    public void A_reply_from_a_daemon_without_firewall_state_reads_as_off()
    {
        var reply = StatusMapping.ToReply(StatusWith(Nftables), includePeers: false);
        reply.Firewall = null;

        Assert.Equal(FirewallStatus.Off, StatusMapping.FromReply(reply).Firewall);
    }

    [Fact]
    public void Status_text_has_one_short_firewall_line()
    {
        var lines = StatusText.Format(StatusWith(Nftables), 0, 0, detail: true, Now).Split('\n');

        Assert.Equal("Firewall:            nftables, 3 rules, 12 dropped (default 7, no-ssh 4)", Assert.Single(lines, l => l.StartsWith("Firewall:", StringComparison.Ordinal)));
        Assert.Contains("Firewall:            userspace, 1 rule, 3 dropped (default 2), 5 flows; nft refused",
            StatusText.Format(StatusWith(Userspace with { Error = "nft refused" }), 0, 0, detail: false, Now), StringComparison.Ordinal);
        Assert.Contains("Firewall:            off", StatusText.Format(StatusWith(FirewallStatus.Off), 0, 0, detail: false, Now), StringComparison.Ordinal);
    }
}
