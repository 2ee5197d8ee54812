using System.Net;
using Modular.WireGuard.Device;
using Modular.WireGuard.Noise;
using Modular.Testing.WireGuard;

namespace Modular.WireGuard.Tests;

/// <summary>Handshake protections seen from the device: cookies under load, replayed initiations, flood guard.</summary>
public sealed class HandshakeDeviceTests
{
    private static readonly TimeSpan RetryStep = ProtocolTimings.RekeyTimeout + ProtocolTimings.RekeyTimeoutJitterMax + TimeSpan.FromMilliseconds(1);

    [Fact]
    public void Under_load_the_responder_demands_a_cookie_and_the_retry_carries_mac2()
    {
        using var pair = new DevicePair();
        pair.B.UnderLoadHandshakesPerSecond = 0;
        var cookieReplies = 0;
        var initiationsWithMac2 = 0;
        var fromB = pair.Binds.B.Endpoint;
        pair.Binds.Network.Filter = (from, _, data) =>
        {
            var type = MessageLayout.ReadType(data.Span);
            if (from == fromB && type == MessageLayout.TypeCookieReply)
            {
                Interlocked.Increment(ref cookieReplies);
            }

            if (from != fromB && type == MessageLayout.TypeInitiation && data.Span[132..].IndexOfAnyExcept((byte)0) >= 0)
            {
                Interlocked.Increment(ref initiationsWithMac2);
            }

            return true;
        };

        var ping = TestPackets.IPv4("100.64.0.1", "100.64.0.2");
        pair.TunA.Inject(ping);
        Assert.True(DevicePair.WaitUntil(() => Volatile.Read(ref cookieReplies) == 1));
        Assert.True(DevicePair.WaitUntil(() => pair.A.FindPeer(pair.B.PublicKey)!.Cookies.HasCookie));
        Assert.Null(pair.A.GetPeerStats()[pair.B.PublicKey].LastHandshake);

        pair.Time.Advance(RetryStep);
        Assert.Equal(ping, pair.TunB.TryReadWritten(DevicePair.Wait));
        Assert.Equal(1, Volatile.Read(ref initiationsWithMac2));
        Assert.Equal(1, Volatile.Read(ref cookieReplies));
    }

    [Fact]
    public void A_replayed_initiation_gets_no_response()
    {
        using var pair = new DevicePair();
        byte[]? initiation = null;
        var responses = 0;
        var fromB = pair.Binds.B.Endpoint;
        pair.Binds.Network.Filter = (from, _, data) =>
        {
            var type = MessageLayout.ReadType(data.Span);
            if (type == MessageLayout.TypeInitiation)
            {
                initiation ??= data.ToArray();
            }

            if (from == fromB && type == MessageLayout.TypeResponse)
            {
                Interlocked.Increment(ref responses);
            }

            return true;
        };
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        Assert.Equal(1, Volatile.Read(ref responses));

        // An attacker replays the captured initiation later (past the flood guard, before any
        // timer fires), from elsewhere: its timestamp is not newer, so it is refused.
        pair.Time.Advance(TimeSpan.FromSeconds(1));
        var dropsBefore = pair.B.DroppedPackets;
        pair.B.BindHook.Inject(initiation!, IPEndPoint.Parse("198.18.0.77:1234"));
        Assert.True(DevicePair.WaitUntil(() => pair.B.DroppedPackets > dropsBefore));
        Assert.Equal(1, Volatile.Read(ref responses));
        Assert.Equal(IPEndPoint.Parse("198.18.0.1:51820"), pair.B.GetPeerStats()[pair.A.PublicKey].Endpoint);
    }

    [Fact]
    public void Crossing_initiations_resolve_into_one_session()
    {
        using var pair = new DevicePair();
        pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2", 10, 1));
        pair.TunB.Inject(TestPackets.IPv4("100.64.0.2", "100.64.0.1", 10, 2));
        byte[]? atB = null;
        byte[]? atA = null;
        pair.AdvanceUntil(() => (atA ??= pair.TunA.TryReadWritten(TimeSpan.Zero)) is not null & (atB ??= pair.TunB.TryReadWritten(TimeSpan.Zero)) is not null, TimeSpan.FromSeconds(30));
        Assert.NotNull(atA);
        Assert.NotNull(atB);
    }

    /// <summary>
    /// Both ends send an initiation at once (as two agents do when they open a connection to each other at the same
    /// moment): the end with the greater key keeps its own and the other answers it, so both packets arrive without
    /// the 5 s REKEY_TIMEOUT retry that crossing initiations otherwise cost. Ten fresh pairs, since which message
    /// reaches which end first varies from run to run.
    /// </summary>
    [Fact]
    public void Crossing_initiations_complete_without_waiting_for_the_retry()
    {
        for (var round = 0; round < 10; round++)
        {
            using var pair = new DevicePair();
            pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2", 10, 1));
            pair.TunB.Inject(TestPackets.IPv4("100.64.0.2", "100.64.0.1", 10, 2));
            byte[]? atB = null;
            byte[]? atA = null;
            var delivered = pair.AdvanceUntil(() => (atA ??= pair.TunA.TryReadWritten(TimeSpan.Zero)) is not null & (atB ??= pair.TunB.TryReadWritten(TimeSpan.Zero)) is not null, TimeSpan.FromSeconds(4));
            Assert.True(delivered, $"round {round}: A got {(atA is null ? "nothing" : "its packet")}, B got {(atB is null ? "nothing" : "its packet")} within 4 s (REKEY_TIMEOUT is 5 s)");
        }
    }

    [Fact]
    public void Wrong_static_key_gets_no_handshake()
    {
        using var pair = new DevicePair();
        var keyAKnows = pair.B.PublicKey;
        pair.B.SetPrivateKey(DevicePair.NewPrivateKey()); // B is now someone A does not know
        pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
        Assert.True(DevicePair.WaitUntil(() => pair.B.DroppedPackets > 0));
        Assert.Null(pair.TunB.TryReadWritten(TimeSpan.FromMilliseconds(200)));
        Assert.Null(pair.A.GetPeerStats()[keyAKnows].LastHandshake);
    }
}
