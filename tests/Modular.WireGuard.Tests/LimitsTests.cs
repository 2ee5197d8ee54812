using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Device;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Tests;

/// <summary>Message-count limits, the per-source rate limiter and the hookable bind on their own.</summary>
public sealed class LimitsTests
{
    [Fact]
    public void RekeyAfterMessages_starts_a_handshake_and_RejectAfterMessages_stops_sending()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        var peerOnA = pair.A.FindPeer(pair.B.PublicKey)!;
        var keypair = peerOnA.CurrentKeypair!;
        Assert.False(peerOnA.ShouldRekeyOnSend(keypair));

        keypair.SkipSendCountersTo(ProtocolTimings.RekeyAfterMessages + 1);
        Assert.True(peerOnA.ShouldRekeyOnSend(keypair));
        Assert.Same(keypair, peerOnA.UsableSendingKeypair());

        keypair.SkipSendCountersTo(ProtocolTimings.RejectAfterMessages);
        Assert.Null(peerOnA.UsableSendingKeypair());

        // Traffic goes on over a new session (the one-per-REKEY_TIMEOUT limit is past).
        pair.Time.Advance(ProtocolTimings.RekeyTimeout + TimeSpan.FromSeconds(1));
        var ping = TestPackets.IPv4("100.64.0.1", "100.64.0.2", 20, 0x31);
        Assert.Equal(ping, pair.AToB(ping));
        Assert.NotSame(keypair, peerOnA.CurrentKeypair);
    }

    [Fact]
    public void Rate_limiter_allows_a_burst_then_twenty_per_second_per_address()
    {
        var time = new FakeTimeProvider();
        var limiter = new SourceRateLimiter(time);
        var source = WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("198.18.0.9:1000"));
        var otherPort = source with { Port = 2000 };
        var otherAddress = WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("198.18.0.10:1000"));
        for (var i = 0; i < 5; i++)
        {
            Assert.True(limiter.Allow(source));
        }

        Assert.False(limiter.Allow(source));
        Assert.False(limiter.Allow(otherPort)); // the port does not matter
        Assert.True(limiter.Allow(otherAddress));

        time.Advance(TimeSpan.FromMilliseconds(50));
        Assert.True(limiter.Allow(source));
        Assert.False(limiter.Allow(source));

        // Idle entries are forgotten.
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.True(limiter.Allow(otherAddress));
        Assert.Equal(1, limiter.TrackedSources);
    }

    [Fact]
    public void Hookable_bind_claims_once_and_drops_injections_while_closed()
    {
        var network = new InMemoryNetwork();
        using var bind = new HookableBind(network.CreateBind(5));
        var sink = new NullSink();
        var endpoint = IPEndPoint.Parse("198.18.0.6:7000");
        var claim = bind.ClaimEndpoint(endpoint, sink);
        Assert.Throws<InvalidOperationException>(() => bind.ClaimEndpoint(endpoint, sink));
        claim.Dispose();
        bind.ClaimEndpoint(endpoint, sink).Dispose();

        bind.Inject([1, 2, 3], endpoint);
        Assert.Equal(1, bind.InjectDrops);

        var receivers = bind.Open(0, out _);
        Assert.Equal(2, receivers.Count);
        bind.Inject([4, 0, 0, 0], endpoint);
        var packets = new[] { new byte[PacketBuffers.MaxSegmentSize] };
        var sizes = new int[1];
        var endpoints = new WgEndpoint[1];
        Assert.Equal(1, receivers[1](packets, sizes, endpoints));
        Assert.Equal(4, sizes[0]);
        Assert.Equal(WgEndpoint.FromIPEndPoint(endpoint), endpoints[0]);

        bind.Close();
        Assert.Throws<ObjectDisposedException>(() => receivers[1](packets, sizes, endpoints));
    }

    private sealed class NullSink : IDatagramSink
    {
        public void Send(ReadOnlySpan<byte> datagram)
        {
        }
    }
}
