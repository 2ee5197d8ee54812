using System.Text.Json;
using Modular.Abstractions.Peers;
using Modular.Agent.Cli;
using Modular.Composition;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>The human forms of `status` and `plugins`, and the JSON form of `plugins`.</summary>
public sealed class TextOutputTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 25, 15, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Status_detail_shows_each_peer_with_its_state_reason_and_age()
    {
        var status = Status(
            new PeerStatus("web", "100.64.0.2", new string('w', 43) + "=", PeerConnectionState.Connected, null, ConnectionType.Relayed, null, null,
                "rels://relay.example:443", "udp", Now.AddMinutes(-5), Now.AddSeconds(-30), 3 * 1024 * 1024, 512, 12.5, true, Now.AddMinutes(-4)),
            new PeerStatus("db", "100.64.0.3", new string('d', 43) + "=", PeerConnectionState.Idle, "lazy: no traffic", null, null, null,
                null, null, Now.AddHours(-2), null, 0, 0, null, false, null));

        var text = StatusText.Format(status, peersTotal: 2, peersConnected: 1, detail: true, Now);

        Assert.Contains("1/2 connected", text, StringComparison.Ordinal);
        Assert.Contains(" web (100.64.0.2):", text, StringComparison.Ordinal);
        Assert.Contains("Relayed", text, StringComparison.Ordinal);
        Assert.Contains("rels://relay.example:443", text, StringComparison.Ordinal);
        Assert.Contains("3 MiB received, 512 B sent", text, StringComparison.Ordinal);
        Assert.Contains("2026-11-25 14:59:30Z (30s ago)", text, StringComparison.Ordinal);
        Assert.Contains("12.5 ms", text, StringComparison.Ordinal);
        Assert.Contains("Idle: lazy: no traffic", text, StringComparison.Ordinal);
        Assert.True(text.IndexOf(" db (", StringComparison.Ordinal) < text.IndexOf(" web (", StringComparison.Ordinal), "peers are listed by name");
    }

    [Fact]
    public void Status_summary_leaves_peers_out()
    {
        var text = StatusText.Format(Status(), peersTotal: 1000, peersConnected: 998, detail: false, Now);

        Assert.Contains("998/1000 connected", text, StringComparison.Ordinal);
        Assert.Contains("998/1000 connected" + Environment.NewLine, text, StringComparison.Ordinal); // no idle count without idle peers
        Assert.Contains("990/1000 connected, 10 idle", StatusText.Format(Status(), peersTotal: 1000, peersConnected: 990, detail: false, Now, peersIdle: 10), StringComparison.Ordinal);
        Assert.DoesNotContain("Public key:          \n", text, StringComparison.Ordinal);
        Assert.Contains("Disconnected, https://m: not yet", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_agents_one_identity_status_shows_the_connected_agent_s_warning()
    {
        var warned = Status() with { Management = new ServiceStatus("https://m", true, "another agent with this identity connected from ipv4:198.18.0.9:4000 and was refused") };

        var text = StatusText.Format(warned, peersTotal: 0, peersConnected: 0, detail: false, Now);

        Assert.Contains("Connected, https://m (warning: another agent with this identity connected from ipv4:198.18.0.9:4000 and was refused)", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Plugins_text_and_json_show_loaded_and_failed_plugins()
    {
        var reply = PluginListing.ToReply("/usr/lib/modular/plugins",
        [
            new PluginInfo("udp", "proxy", "0.1.0+abc", "/p/proxy-udp/Modular.Plugins.ProxyUdp.dll", true, null, "Relays through loopback UDP."),
            new PluginInfo("broken", "unknown", null, "/p/broken/Broken.dll", false, "BadImageFormatException: bad IL", null),
        ]);

        var text = PluginListing.ToText(reply, "from the running daemon");
        using var json = JsonDocument.Parse(PluginListing.ToJson(reply, "from the running daemon"));

        Assert.Contains("0.1.0 ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("+abc", text, StringComparison.Ordinal);
        Assert.Contains("why: BadImageFormatException: bad IL", text, StringComparison.Ordinal);
        Assert.True(text.IndexOf("udp", StringComparison.Ordinal) < text.IndexOf("broken", StringComparison.Ordinal), "loaded plugins come first");
        var plugins = json.RootElement.GetProperty("plugins");
        Assert.Equal("0.1.0+abc", plugins[0].GetProperty("version").GetString());
        Assert.Equal(JsonValueKind.Null, plugins[0].GetProperty("error").ValueKind);
        Assert.False(plugins[1].GetProperty("loaded").GetBoolean());
        Assert.Equal("/p/broken/Broken.dll", plugins[1].GetProperty("assembly_path").GetString());
    }

    [Fact]
    public void Plugins_from_the_daemon_list_the_relayed_peers_each_proxy_carries()
    {
        static PeerStatus Peer(string name, string? proxy) => new(
            name, "100.64.0.9", new string('k', 43) + "=", PeerConnectionState.Connected, null, proxy is null ? ConnectionType.P2P : ConnectionType.Relayed,
            null, null, proxy is null ? null : "rel://r1", proxy, null, null, 0, 0, null, false, null);
        PluginInfo[] plugins =
        [
            new PluginInfo("udp", "proxy", "0.1.0", "/p/proxy-udp/Modular.Plugins.ProxyUdp.dll", true, null, "udp"),
            new PluginInfo("bind", "proxy", "0.1.0", "/p/proxy-bind/Modular.Plugins.ProxyBind.dll", true, null, "bind"),
            new PluginInfo("netflow", "flow-sink", "0.1.0", "/p/netflow/Modular.Plugins.Netflow.dll", true, null, "netflow"),
        ];

        var reply = PluginListing.ToReply("/p", plugins, [Peer("zeta", "udp"), Peer("alpha", "udp"), Peer("direct", null)]);

        var text = PluginListing.ToText(reply, "from the running daemon");
        Assert.Contains("carries relayed peers: alpha, zeta", text, StringComparison.Ordinal);
        Assert.Single(text.Split('\n'), line => line.Contains("carries relayed peers", StringComparison.Ordinal));
        using var json = JsonDocument.Parse(PluginListing.ToJson(reply, "from the running daemon"));
        var byName = json.RootElement.GetProperty("plugins").EnumerateArray().ToDictionary(p => p.GetProperty("name").GetString()!);
        Assert.Equal(["alpha", "zeta"], byName["udp"].GetProperty("relayed_peers").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal(0, byName["bind"].GetProperty("relayed_peers").GetArrayLength());
        Assert.Equal(0, byName["netflow"].GetProperty("relayed_peers").GetArrayLength());

        // Loaded by the CLI itself (no daemon): no peers to show.
        Assert.Equal(0, PluginListing.ToReply("/p", plugins).Plugins.Sum(p => p.RelayedPeers.Count));
    }

    private static AgentStatus Status(params PeerStatus[] peers) => new(
        "100.64.0.1",
        new string('k', 43) + "=",
        new InterfaceStatus("mdl0", "userspace", 51820, 1280),
        new FeatureStatus(true, "15m", [], false, "auto", true, false, false),
        new ServiceStatus("https://m", false, "not yet"),
        new ServiceStatus("", false, "not yet"),
        [],
        peers);
}
