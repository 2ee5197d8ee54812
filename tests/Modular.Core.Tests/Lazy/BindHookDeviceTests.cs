using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Core.Lazy;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Device;
using Modular.WireGuard.Interface;

namespace Modular.Core.Tests.Lazy;

/// <summary>
/// The userspace monitor on a real in-process WireGuard device: A (100.64.0.1) knows B (100.64.0.2) only by the
/// stand-in, so A's first packet for B is staged and A's handshake initiation is reported instead of sent.
/// Then B's real endpoint is set and the staged packet must still arrive.
/// </summary>
public sealed class BindHookDeviceTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly InMemoryBindPair _binds = new();
    private readonly InMemoryTun _tunA = new("lazyA");
    private readonly InMemoryTun _tunB = new("lazyB");
    private readonly WgDevice _a;
    private readonly WgDevice _b;

    public BindHookDeviceTests()
    {
        _a = new WgDevice(_tunA, _binds.A, NullLoggerFactory.Instance, _time);
        _b = new WgDevice(_tunB, _binds.B, NullLoggerFactory.Instance, _time);
        _a.SetPrivateKey(WgKeys.GeneratePrivateKey());
        _b.SetPrivateKey(WgKeys.GeneratePrivateKey());
        _a.SetListenPort(51820);
        _b.SetListenPort(51821);
        _b.SetPeer(new WgPeerConfig(_a.PublicKey, [IPNetwork.Parse("100.64.0.1/32")], IPEndPoint.Parse("198.18.0.1:51820")));
        _a.Up();
        _b.Up();
    }

    [Fact]
    public async Task The_first_packet_to_an_idle_peer_is_reported_as_an_initiation_and_delivered_once_connected()
    {
        var listener = new RecordingActivityListener();
        await using var monitor = new BindHookActivityMonitor(_a.BindHook, listener, NullLogger.Instance);
        var allowedB = new[] { IPNetwork.Parse("100.64.0.2/32") };
        _a.SetPeer(new WgPeerConfig(_b.PublicKey, allowedB, monitor.Watch(_b.PublicKey)));
        var first = TestPackets.IPv4("100.64.0.1", "100.64.0.2", marker: 0x77);

        _tunA.Inject(first);

        var report = listener.Next(Wait);
        Assert.NotNull(report);
        Assert.Equal(_b.PublicKey, report.Value.Peer);
        Assert.Equal(148, report.Value.Datagram.Length);
        Assert.Equal(1, report.Value.Datagram[0]);
        Assert.Equal(0, _binds.Network.Delivered + _binds.Network.Dropped); // nothing reached the network
        Assert.Null(_tunB.TryReadWritten(TimeSpan.FromMilliseconds(100)));

        // The lazy manager connects the peer: its real endpoint replaces the stand-in, which is given back.
        _a.SetPeer(new WgPeerConfig(_b.PublicKey, allowedB, IPEndPoint.Parse("198.18.0.2:51821")));
        monitor.Unwatch(_b.PublicKey);

        // WireGuard retries the initiation on its own timer, now towards B; the staged packet follows the handshake.
        byte[]? delivered = null;
        for (var retry = 0; retry < 3 && delivered is null; retry++)
        {
            _time.Advance(ProtocolTimings.RekeyTimeout + ProtocolTimings.RekeyTimeoutJitterMax + TimeSpan.FromMilliseconds(1));
            delivered = _tunB.TryReadWritten(Wait);
        }

        Assert.Equal(first, delivered);
        Assert.Equal(1, monitor.DatagramsReported);
        Assert.Equal(0, monitor.Count);
    }

    [Fact]
    public async Task Every_retry_while_idle_is_reported_for_that_peer()
    {
        var listener = new RecordingActivityListener();
        await using var monitor = new BindHookActivityMonitor(_a.BindHook, listener, NullLogger.Instance);
        _a.SetPeer(new WgPeerConfig(_b.PublicKey, [IPNetwork.Parse("100.64.0.2/32")], monitor.Watch(_b.PublicKey)));

        _tunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
        Assert.NotNull(listener.Next(Wait));
        _time.Advance(ProtocolTimings.RekeyTimeout + ProtocolTimings.RekeyTimeoutJitterMax + TimeSpan.FromMilliseconds(1));
        var retry = listener.Next(Wait);

        Assert.NotNull(retry);
        Assert.Equal(_b.PublicKey, retry.Value.Peer);
        Assert.Equal(1, retry.Value.Datagram[0]);
        Assert.Equal(2, monitor.DatagramsReported);
    }

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
    }
}
