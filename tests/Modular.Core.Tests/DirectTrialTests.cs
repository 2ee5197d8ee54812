using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.Core.Peers;

namespace Modular.Core.Tests;

/// <summary>
/// What proves the direct path a relayed peer switched to (issue 16). Without a redirect, a packet through the relay
/// moves WireGuard's endpoint to the proxy, so the direct endpoint plus bytes or a handshake since the switch prove it.
/// With the kept proxy redirected as the direct endpoint, relayed packets look direct too: only bytes beyond those the
/// proxy handed WireGuard since the switch prove the direct path.
/// </summary>
public sealed class DirectTrialTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture);
    private static readonly IPEndPoint Direct = IPEndPoint.Parse("198.18.0.3:51820");
    private static readonly IPEndPoint Proxy = IPEndPoint.Parse("127.192.0.1:40000");

    private static WgPeerStats Stats(IPEndPoint? endpoint, long rx, double? handshakeAt = null)
        => new(handshakeAt is { } h ? T0 + TimeSpan.FromSeconds(h) : null, rx, 0, endpoint);

    public static TheoryData<string, DirectTrial, WgPeerStats?, long?, bool> Cases => new()
    {
        // name, trial (switched at T0 with rx 1000), stats, bytes the proxy handed WireGuard now, proven
        { "not redirected: bytes on the direct endpoint", new(T0, Direct, 1000), Stats(Direct, 1032), null, true },
        { "not redirected: a handshake on the direct endpoint", new(T0, Direct, 1000), Stats(Direct, 1000, handshakeAt: 1), null, true },
        { "not redirected: WireGuard roamed to the proxy", new(T0, Direct, 1000), Stats(Proxy, 1064), null, false },
        { "not redirected: nothing since the switch", new(T0, Direct, 1000), Stats(Direct, 1000), null, false },
        { "no stats", new(T0, Direct, 1000), null, null, false },
        { "redirected: every byte came through the proxy", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Direct, 1064), 564, false },
        { "redirected: a handshake through the proxy proves nothing", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Direct, 1148, handshakeAt: 1), 648, false },
        { "redirected: more bytes than the proxy handed over", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Direct, 1096), 564, true },
        { "redirected: the proxy handed nothing over", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Direct, 1032), 500, true },
        { "redirected: the proxy's count unknown now", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Direct, 2000), null, false },
        { "redirected: on another endpoint", new(T0, Direct, 1000, RelayedAtSwitch: 500), Stats(Proxy, 2000), 500, false },
        { "IPv4-mapped endpoint is the same", new(T0, Direct, 1000), Stats(new IPEndPoint(Direct.Address.MapToIPv6(), Direct.Port), 1032), null, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Proof(string name, DirectTrial trial, WgPeerStats? stats, long? relayedNow, bool proven)
    {
        Assert.True(trial.ProvenBy(stats, relayedNow) == proven, name);
    }
}
