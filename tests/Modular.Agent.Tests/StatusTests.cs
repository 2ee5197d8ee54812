using Modular.Abstractions.Config;
using System.Text.Json;
using Modular.Abstractions.Peers;
using Modular.Agent.Daemon;
using Modular.Agent.Status;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>The status snapshot, its trip across the daemon socket, and its JSON names.</summary>
public sealed class StatusTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string[] PeerFields =
    [
        "name", "ip", "public_key", "state", "reason", "connection_type", "local_candidate", "remote_candidate", "relay",
        "proxy", "last_state_change", "last_handshake", "rx_bytes", "tx_bytes", "latency_ms", "quantum_resistant",
        "quantum_resistant_since",
    ];

    private static readonly DateTimeOffset At = new(2026, 11, 25, 14, 29, 47, 123, TimeSpan.FromHours(2));

    [Fact]
    public void Peer_json_has_exactly_the_design_field_names_and_iso_utc_times()
    {
        var json = JsonDocument.Parse(StatusJson.Serialize(WithPeers(ConnectedPeer("b", "100.64.0.2"))));

        var peer = json.RootElement.GetProperty("peers")[0];
        Assert.Equal(PeerFields.Order(StringComparer.Ordinal), peer.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal("Connected", peer.GetProperty("state").GetString());
        Assert.Equal("P2P", peer.GetProperty("connection_type").GetString());
        Assert.Equal("2026-11-25T12:29:47.123Z", peer.GetProperty("last_handshake").GetString());
        Assert.Equal(1234567890123, peer.GetProperty("rx_bytes").GetInt64());
        Assert.Equal(JsonValueKind.Null, peer.GetProperty("reason").ValueKind);
    }

    [Fact]
    public void Keys_print_as_they_are_not_escaped()
    {
        var text = StatusJson.Serialize(WithPeers() with { PublicKey = "ab+/cd==" });

        Assert.Contains("\"public_key\": \"ab+/cd==\"", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Idle_peer_has_nulls_not_missing_fields()
    {
        var idle = new PeerStatus("c", "100.64.0.3", Key('c'), PeerConnectionState.Idle, "lazy: no traffic yet", null, null, null, null, null, null, null, 0, 0, null, false, null);
        var peer = JsonDocument.Parse(StatusJson.Serialize(WithPeers(idle))).RootElement.GetProperty("peers")[0];

        Assert.Equal("Idle", peer.GetProperty("state").GetString());
        Assert.Equal("lazy: no traffic yet", peer.GetProperty("reason").GetString());
        Assert.Equal(JsonValueKind.Null, peer.GetProperty("connection_type").ValueKind);
        Assert.Equal(JsonValueKind.Null, peer.GetProperty("latency_ms").ValueKind);
        Assert.Equal(JsonValueKind.Null, peer.GetProperty("last_handshake").ValueKind);
    }

    [Fact]
    public void Status_survives_the_trip_across_the_daemon_socket()
    {
        var status = WithPeers(
            ConnectedPeer("a", "100.64.0.1"),
            new PeerStatus("z", "100.64.0.26", Key('z'), PeerConnectionState.Connecting, "waiting for answer", null, null, null, "rel://r1", "udp", At, null, 5, 6, null, false, null));

        var back = StatusMapping.FromReply(StatusMapping.ToReply(status, includePeers: true));

        Assert.Equal(StatusJson.Serialize(status), StatusJson.Serialize(back));
    }

    [Fact]
    public void Without_detail_the_reply_counts_peers_but_leaves_them_out()
    {
        var reply = StatusMapping.ToReply(WithPeers(ConnectedPeer("a", "100.64.0.1"), ConnectedPeer("b", "100.64.0.2") with { State = PeerConnectionState.Idle }), includePeers: false);

        Assert.Empty(reply.Peers);
        Assert.Equal(2, reply.PeersTotal);
        Assert.Equal(1, reply.PeersConnected);
    }

    [Fact]
    public void Recorder_keeps_every_update_from_concurrent_writers()
    {
        var recorder = NewRecorder();

        Parallel.For(0, 2000, i => recorder.SetPeer(ConnectedPeer($"peer{i}", $"100.64.{i / 250}.{i % 250}") with { PublicKey = $"key{i:D5}" }));
        Parallel.For(0, 1000, i => recorder.RemovePeer($"key{i * 2:D5}"));
        Parallel.For(0, 1000, i => Assert.True(recorder.UpdatePeer($"key{(i * 2) + 1:D5}", p => p with { RxBytes = p.RxBytes + 1 })));

        var snapshot = recorder.Snapshot();
        Assert.Equal(1000, snapshot.Peers.Count);
        Assert.All(snapshot.Peers, p => Assert.Equal(1234567890124, p.RxBytes));
        Assert.Equal((1000, 1000), recorder.PeerCounts());
        Assert.False(recorder.UpdatePeer("key00000", p => p));
    }

    [Fact]
    public void A_snapshot_does_not_change_after_it_was_taken()
    {
        var recorder = NewRecorder();
        recorder.SetPeer(ConnectedPeer("a", "100.64.0.1"));
        var before = recorder.Snapshot();

        recorder.SetManagement(new ServiceStatus("https://m", true, null));
        recorder.RemovePeer(Key('a'));
        recorder.SetOverlayIp("100.64.0.9");

        Assert.Single(before.Peers);
        Assert.False(before.Management.Connected);
        Assert.Null(before.Ip);
        Assert.Equal("100.64.0.9", recorder.Snapshot().Ip);
    }

    [Fact]
    public void A_thousand_peers_cross_the_socket_format_and_print_whole()
    {
        var recorder = NewRecorder();
        for (var i = 0; i < 1000; i++)
        {
            recorder.SetPeer(ConnectedPeer($"peer{i:D4}", $"100.64.{i / 250}.{i % 250}") with { PublicKey = $"{i:D43}=" });
        }

        // What `status -d --json` costs on both ends, minus the process start of the CLI. Printed, not asserted.
        Protocol.StatusReply reply = null!;
        byte[] wire = [];
        AgentStatus back = null!;
        string json = "", text = "";
        for (var round = 0; round < 3; round++)
        {
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            reply = StatusMapping.ToReply(recorder.Snapshot(), includePeers: true);
            wire = Google.Protobuf.MessageExtensions.ToByteArray(reply);
            var daemonSide = stopwatch.Elapsed;
            back = StatusMapping.FromReply(Protocol.StatusReply.Parser.ParseFrom(wire));
            json = StatusJson.Serialize(back);
            var jsonDone = stopwatch.Elapsed;
            text = Cli.StatusText.Format(back, reply.PeersTotal, reply.PeersConnected, detail: true, At);
            output.WriteLine(
                $"1000 peers, round {round}: {wire.Length} bytes on the socket; daemon side {daemonSide.TotalMilliseconds:0.0} ms, " +
                $"CLI JSON {(jsonDone - daemonSide).TotalMilliseconds:0.0} ms, CLI text {(stopwatch.Elapsed - jsonDone).TotalMilliseconds:0.0} ms");
        }

        Assert.Equal(1000, back.Peers.Count);
        Assert.Equal(1000, JsonDocument.Parse(json).RootElement.GetProperty("peers").GetArrayLength());
        Assert.Contains("peer0999", text, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(900, "15m")]
    [InlineData(90, "1m30s")]
    [InlineData(3600, "1h")]
    [InlineData(5430, "1h30m30s")]
    [InlineData(0, "0s")]
    public void Durations_print_in_the_toml_style(int seconds, string expected)
        => Assert.Equal(expected, ConfigDuration.Format(TimeSpan.FromSeconds(seconds)));

    private static StatusRecorder NewRecorder() => new(
        new InterfaceStatus("mdl0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        Key('k'),
        new ServiceStatus("https://m", false, "not yet"),
        new ServiceStatus("", false, "not yet"));

    private static AgentStatus WithPeers(params PeerStatus[] peers) => NewRecorder().Snapshot() with { Peers = peers, Ip = "100.64.0.1" };

    private static PeerStatus ConnectedPeer(string name, string ip) => new(
        name, ip, Key(name[0]), PeerConnectionState.Connected, null, ConnectionType.P2P, "198.18.0.1:51820", "198.18.0.2:51820", null, null,
        At, At, 1234567890123, 42, 0.75, true, At);

    private static string Key(char c) => new string(c, 43) + "=";
}
