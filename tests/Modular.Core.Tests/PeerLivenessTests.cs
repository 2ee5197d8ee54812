using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Core.Peers;

namespace Modular.Core.Tests;

/// <summary>
/// The liveness verdict over a table of (stats, state, time) cases: plain values in, one action out, no clock,
/// no WireGuard. Timings are the defaults: keepalive 25 s, silent 90 s, silence probe 12 s, first handshake 20 s,
/// stale 3 min, recheck 30 s.
/// </summary>
public sealed class PeerLivenessTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

    private static readonly PeerLiveness Defaults = new(new PeerConnOptions());

    private static DateTimeOffset At(double seconds) => T0 + TimeSpan.FromSeconds(seconds);

    private static WgPeerStats Stats(double? handshakeAt, long rx) => new(handshakeAt is { } h ? At(h) : null, rx, 0, null);

    /// <summary>A path set at T0; the rest as each case says.</summary>
    private static LivenessState Path(
        PeerConnectionState connection = PeerConnectionState.Connected,
        ConnectionType? type = ConnectionType.P2P,
        double lastDirectTry = 0,
        long? received = 1000,
        double receivedAt = 0,
        double? probedAt = null)
        => new(connection, type, T0, At(lastDirectTry), received, At(receivedAt), probedAt is { } p ? At(p) : null);

    public static TheoryData<string, double, WgPeerStats?, LivenessState, LivenessAction, string?> Cases => new()
    {
        // name, now (s after the path was set), stats, state, expected action, expected reason (part)
        { "connecting, no stats yet", 5, null, Path(PeerConnectionState.Connecting, received: null), LivenessAction.Keep, null },
        { "connecting, first handshake on this path", 3, Stats(2, 0), Path(PeerConnectionState.Connecting, received: null), LivenessAction.MarkConnected, null },
        { "connecting, handshake a moment before the path was set counts", 3, Stats(-0.5, 0), Path(PeerConnectionState.Connecting, received: null), LivenessAction.MarkConnected, null },
        { "connecting, handshake of an earlier path does not", 3, Stats(-5, 0), Path(PeerConnectionState.Connecting, received: null), LivenessAction.Keep, null },
        { "connecting, no handshake within 20 s (direct)", 21, Stats(null, 0), Path(PeerConnectionState.Connecting, received: 0), LivenessAction.Reconnect, "no WireGuard handshake over the direct path within 20 s" },
        { "connecting, no handshake within 20 s (relayed)", 21, Stats(null, 0), Path(PeerConnectionState.Connecting, ConnectionType.Relayed, lastDirectTry: 21, received: 0), LivenessAction.Reconnect, "over the relayed path" },
        { "connecting, 20 s exactly is still in time", 20, Stats(null, 0), Path(PeerConnectionState.Connecting, received: 0), LivenessAction.Keep, null },
        { "connected, traffic moving", 100, Stats(90, 5000), Path(received: 4000, receivedAt: 99), LivenessAction.Keep, null },
        { "connected, silent 90 s is not yet too long", 90, Stats(80, 1000), Path(), LivenessAction.Keep, null },
        { "connected, silent over 90 s: probe", 91, Stats(80, 1000), Path(), LivenessAction.Probe, null },
        { "probed, silent 12 s more is still in time", 103, Stats(80, 1000), Path(probedAt: 91), LivenessAction.Keep, null },
        { "probed, no answer within 12 s: reconnect", 104, Stats(80, 1000), Path(probedAt: 91), LivenessAction.Reconnect, "nothing received for 104 s and no answer to a new handshake" },
        { "probed, the handshake answered: watch restarts", 104, Stats(95, 1000), Path(probedAt: 91), LivenessAction.Keep, null },
        { "probed, bytes arrived: watch restarts", 104, Stats(80, 1200), Path(probedAt: 91), LivenessAction.Keep, null },
        { "probed and still no handshake: the first-handshake timeout does not apply", 100, Stats(null, 1000), Path(probedAt: 95), LivenessAction.Keep, null },
        { "connected, handshake stale (over 3 min)", 200, Stats(19, 5000), Path(received: 4000), LivenessAction.Reconnect, "WireGuard handshake went stale (last 181 s ago)" },
        { "connected, handshake 3 min old is not yet stale", 200, Stats(20, 5000), Path(received: 4000), LivenessAction.Keep, null },
        { "relayed, recheck due after 30 s", 30, Stats(10, 2000), Path(type: ConnectionType.Relayed, received: 1000), LivenessAction.RecheckDirect, null },
        { "relayed, recheck not yet due", 29, Stats(10, 2000), Path(type: ConnectionType.Relayed, received: 1000), LivenessAction.Keep, null },
        { "relayed and connecting, recheck due too", 30, Stats(null, 0), Path(PeerConnectionState.Connecting, ConnectionType.Relayed, received: 0), LivenessAction.Reconnect, "within 20 s" },
        { "direct, never rechecked", 300, Stats(290, 9000), Path(lastDirectTry: 0, received: 1), LivenessAction.Keep, null },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void The_verdict_follows_the_table(string name, double now, WgPeerStats? stats, LivenessState state, LivenessAction expected, string? reason)
    {
        var verdict = Defaults.Decide(At(now), stats, state);

        Assert.True(expected == verdict.Action, $"{name}: expected {expected}, got {verdict.Action} ({verdict.Reason})");
        if (reason is null)
        {
            Assert.Null(verdict.Reason);
        }
        else
        {
            Assert.Contains(reason, verdict.Reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Force_relay_never_rechecks_the_direct_path()
    {
        var forced = new PeerLiveness(new PeerConnOptions(ForceRelay: true));

        var verdict = forced.Decide(At(300), Stats(290, 2000), Path(type: ConnectionType.Relayed, received: 1000));

        Assert.Equal(LivenessAction.Keep, verdict.Action);
    }

    [Fact]
    public void The_next_state_records_what_the_action_did()
    {
        var probe = Defaults.Decide(At(91), Stats(80, 1000), Path());
        Assert.Equal(LivenessAction.Probe, probe.Action);
        Assert.Equal(At(91), probe.Next.ProbedAt);

        var connected = Defaults.Decide(At(3), Stats(2, 0), Path(PeerConnectionState.Connecting, received: null));
        Assert.Equal(PeerConnectionState.Connected, connected.Next.Connection);
        Assert.Equal(At(3), connected.Next.ReceivedAt);

        var recheck = Defaults.Decide(At(30), Stats(10, 2000), Path(type: ConnectionType.Relayed, received: 1000));
        Assert.Equal(At(30), recheck.Next.LastDirectTry);

        var moved = Defaults.Decide(At(50), Stats(40, 1500), Path(receivedAt: 10, probedAt: null));
        Assert.Equal((1500L, At(50)), (moved.Next.Received!.Value, moved.Next.ReceivedAt));
    }

    [Fact]
    public void Asked_again_after_a_probe_a_stale_handshake_still_reconnects_in_the_same_look()
    {
        // Silent and stale at once: the loop probes, then asks again with the probe recorded.
        var state = Path(received: 5000, receivedAt: 100);
        var first = Defaults.Decide(At(200), Stats(10, 5000), state);
        Assert.Equal(LivenessAction.Probe, first.Action);

        var second = Defaults.Decide(At(200), Stats(10, 5000), first.Next);

        Assert.Equal(LivenessAction.Reconnect, second.Action);
        Assert.Contains("stale", second.Reason, StringComparison.Ordinal);
    }
}
