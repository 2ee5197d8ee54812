using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Device;
using Modular.WireGuard.Noise;
using Modular.Testing.WireGuard;

namespace Modular.WireGuard.Tests;

/// <summary>The protocol timers, driven by a fake clock (no real waiting on timer periods).</summary>
public sealed class TimerTests
{
    private static readonly TimeSpan RetryStep = ProtocolTimings.RekeyTimeout + ProtocolTimings.RekeyTimeoutJitterMax + TimeSpan.FromMilliseconds(1);

    /// <summary>Counts handshake initiations A puts on the wire; optionally drops everything A sends.</summary>
    private static Func<int> CountInitiationsFromA(DevicePair pair, bool dropAll)
    {
        var count = 0;
        var fromA = pair.Binds.A.Endpoint;
        pair.Binds.Network.Filter = (from, _, data) =>
        {
            if (from == fromA && MessageLayout.ReadType(data.Span) == MessageLayout.TypeInitiation)
            {
                Interlocked.Increment(ref count);
            }

            return !(dropAll && from == fromA);
        };
        return () => Volatile.Read(ref count);
    }

    [Fact]
    public void Handshake_is_retried_after_RekeyTimeout()
    {
        using var pair = new DevicePair();
        var initiations = CountInitiationsFromA(pair, dropAll: true);
        pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
        Assert.True(DevicePair.WaitUntil(() => initiations() == 1));

        pair.Time.Advance(ProtocolTimings.RekeyTimeout - TimeSpan.FromMilliseconds(10));
        Assert.Equal(1, initiations());
        pair.Time.Advance(ProtocolTimings.RekeyTimeoutJitterMax + TimeSpan.FromMilliseconds(20));
        Assert.Equal(2, initiations());
    }

    [Fact]
    public void More_data_does_not_send_initiations_faster_than_RekeyTimeout()
    {
        using var pair = new DevicePair();
        var initiations = CountInitiationsFromA(pair, dropAll: true);
        for (var i = 0; i < 20; i++)
        {
            pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
        }

        Assert.True(DevicePair.WaitUntil(() => pair.A.FindPeer(pair.B.PublicKey)!.StagedCount == 20 && initiations() >= 1));
        Assert.Equal(1, initiations());
    }

    [Fact]
    public void Gives_up_after_RekeyAttemptTime_and_drops_staged_packets()
    {
        using var pair = new DevicePair();
        var initiations = CountInitiationsFromA(pair, dropAll: true);
        pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
        Assert.True(DevicePair.WaitUntil(() => initiations() == 1));
        var peer = pair.A.FindPeer(pair.B.PublicKey)!;
        Assert.True(DevicePair.WaitUntil(() => peer.StagedCount == 1));

        for (var i = 0; i < 25; i++)
        {
            pair.Time.Advance(RetryStep);
        }

        // The first attempt plus MaxHandshakeAttempts retries span REKEY_ATTEMPT_TIME (90 s); then silence.
        Assert.Equal(1 + ProtocolTimings.MaxHandshakeAttempts, initiations());
        Assert.Equal(0, peer.StagedCount);
        Assert.True(peer.ZeroKeyMaterial.IsPending);
    }

    [Fact]
    public void Keepalive_is_sent_after_KeepaliveTimeout_of_receive_only_traffic()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        var rxOnA = pair.A.FindPeer(pair.B.PublicKey)!;
        Assert.True(DevicePair.WaitUntil(() => rxOnA.RxBytes > 0));
        var before = rxOnA.RxBytes;
        var keepaliveOnB = pair.B.FindPeer(pair.A.PublicKey)!.SendKeepaliveTimer;
        Assert.True(DevicePair.WaitUntil(() => keepaliveOnB.IsPending), "B arms its keepalive on receiving data");

        // Just short of the timeout the keepalive has not fired: the fake clock runs due timers inside Advance, so
        // a timer still pending afterwards sent nothing (no real-time wait needed to show it).
        pair.Time.Advance(ProtocolTimings.KeepaliveTimeout - TimeSpan.FromMilliseconds(1));
        Assert.True(keepaliveOnB.IsPending);
        Assert.Equal(before, rxOnA.RxBytes);
        pair.Time.Advance(TimeSpan.FromMilliseconds(2));

        // B answered with an empty transport message: header + tag, 32 bytes.
        Assert.True(DevicePair.WaitUntil(() => rxOnA.RxBytes == before + MessageLayout.TransportMinSize));
    }

    [Fact]
    public void The_responder_keeps_its_keepalive_duty_when_the_first_data_overtakes_its_handshake_thread()
    {
        using var pair = new DevicePair();
        var fromB = pair.Binds.B.Endpoint;
        var held = 0;
        byte[]? firstData = null;
        pair.Binds.Network.Filter = (from, _, data) =>
        {
            if (from != fromB || MessageLayout.ReadType(data.Span) != MessageLayout.TypeResponse || Interlocked.Exchange(ref held, 1) != 0)
            {
                return true;
            }

            // B's handshake thread is inside its send of the response. The response reaches A by hand, and
            // this thread is held until A's first data has reached B's TUN: whatever B does after the send
            // happens after that data armed B's keepalive timer (on a busy machine this interleaving is luck).
            pair.A.BindHook.Inject(data.Span, IPEndPoint.Parse("198.18.0.2:51821"));
            Volatile.Write(ref firstData, pair.TunB.TryReadWritten(DevicePair.Wait));
            return false;
        };
        var ping = TestPackets.IPv4("100.64.0.1", "100.64.0.2");
        pair.TunA.Inject(ping);
        Assert.True(DevicePair.WaitUntil(() => Volatile.Read(ref firstData) is not null), "A's first data at B");
        Assert.Equal(ping, firstData);

        // B's handshake thread works through its queue in order: once it has dropped this bogus cookie reply,
        // it has finished with the initiation too.
        var dropsBefore = pair.B.DroppedPackets;
        var bogusCookieReply = new byte[MessageLayout.CookieReplySize];
        bogusCookieReply[0] = MessageLayout.TypeCookieReply;
        pair.B.BindHook.Inject(bogusCookieReply, IPEndPoint.Parse("198.18.0.1:51820"));
        Assert.True(DevicePair.WaitUntil(() => pair.B.DroppedPackets > dropsBefore), "B's handshake thread done");

        var rxOnA = pair.A.FindPeer(pair.B.PublicKey)!;
        var before = rxOnA.RxBytes;
        pair.Time.Advance(ProtocolTimings.KeepaliveTimeout + TimeSpan.FromMilliseconds(1));
        Assert.True(DevicePair.WaitUntil(() => rxOnA.RxBytes == before + MessageLayout.TransportMinSize), "B's keepalive at A");
    }

    [Fact]
    public void No_keepalive_when_data_went_back()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        Assert.NotNull(pair.BToA(TestPackets.IPv4("100.64.0.2", "100.64.0.1")));
        var peerOnB = pair.B.FindPeer(pair.A.PublicKey)!;

        // B's TUN thread stops the timer right after its send returns, which may be after A got the data.
        Assert.True(DevicePair.WaitUntil(() => !peerOnB.SendKeepaliveTimer.IsPending));
    }

    [Fact]
    public void Persistent_keepalive_is_sent_every_interval()
    {
        using var pair = new DevicePair();
        pair.ExchangeAndSettle();
        var peerOnB = pair.B.FindPeer(pair.A.PublicKey)!;
        var initial = peerOnB.RxBytes;
        pair.A.SetPeer(new WgPeerConfig(pair.B.PublicKey, [IPNetwork.Parse("100.64.0.2/32")], IPEndPoint.Parse("198.18.0.2:51821"), PersistentKeepalive: TimeSpan.FromSeconds(25)));

        // Switching the interval on sends one keepalive at once.
        Assert.True(DevicePair.WaitUntil(() => peerOnB.RxBytes == initial + MessageLayout.TransportMinSize));
        var before = peerOnB.RxBytes;
        for (var i = 1; i <= 3; i++)
        {
            pair.Time.Advance(TimeSpan.FromSeconds(25));
            var expected = before + (i * MessageLayout.TransportMinSize);
            Assert.True(DevicePair.WaitUntil(() => peerOnB.RxBytes == expected), $"keepalive {i}");
        }
    }

    [Fact]
    public void New_handshake_when_data_gets_no_answer()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        Assert.NotNull(pair.BToA(TestPackets.IPv4("100.64.0.2", "100.64.0.1")));
        var initiations = CountInitiationsFromA(pair, dropAll: false);

        // B stops answering (its keepalives are dropped too). Silenced before time moves, so no
        // keepalive B sends while the clock advances can reach A late and stop A's timer.
        var fromB = pair.Binds.B.Endpoint;
        var counting = pair.Binds.Network.Filter!;
        pair.Binds.Network.Filter = (from, to, data) => counting(from, to, data) && from != fromB;
        pair.Time.Advance(TimeSpan.FromSeconds(30));
        var peerOnA = pair.A.FindPeer(pair.B.PublicKey)!;
        for (var attempt = 0; attempt < 5 && !peerOnA.NewHandshake.IsPending; attempt++)
        {
            // A packet B sent before the silence may still be on its way and stop the timer: send again.
            pair.TunA.Inject(TestPackets.IPv4("100.64.0.1", "100.64.0.2"));
            Assert.NotNull(pair.TunB.TryReadWritten(DevicePair.Wait));
            DevicePair.WaitUntil(() => peerOnA.NewHandshake.IsPending);
        }

        Assert.True(peerOnA.NewHandshake.IsPending);
        pair.Time.Advance(ProtocolTimings.KeepaliveTimeout + ProtocolTimings.RekeyTimeout + ProtocolTimings.RekeyTimeoutJitterMax);
        Assert.Equal(1, initiations());
    }

    [Fact]
    public void Keys_are_zeroed_after_three_times_RejectAfterTime()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        var peerOnA = pair.A.FindPeer(pair.B.PublicKey)!;
        var keypair = peerOnA.CurrentKeypair!;
        var indicesBefore = pair.A.Indices.Count;
        Assert.True(indicesBefore > 0);

        pair.Binds.Network.Filter = (_, _, _) => false; // silence: nothing refreshes the session
        pair.Time.Advance(ProtocolTimings.RejectAfterTime);

        // Expired keys are no longer used to send, although not yet erased.
        Assert.Null(peerOnA.UsableSendingKeypair());
        Assert.NotNull(peerOnA.CurrentKeypair);

        pair.Time.Advance(ProtocolTimings.ZeroKeysAfter - ProtocolTimings.RejectAfterTime + TimeSpan.FromSeconds(1));
        Assert.True(DevicePair.WaitUntil(() => peerOnA.CurrentKeypair is null));
        Assert.True(keypair.IsDisposed);
        Assert.Equal(0, pair.A.Indices.Count);
    }

    [Fact]
    public void Expired_session_is_renewed_by_new_traffic()
    {
        using var pair = new DevicePair();
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));

        // The network goes silent while the session expires (the timers' retries are lost too).
        pair.Binds.Network.Filter = (_, _, _) => false;
        pair.Time.Advance(ProtocolTimings.RejectAfterTime + TimeSpan.FromSeconds(1));
        pair.Binds.Network.Filter = null;
        pair.Time.Advance(TimeSpan.FromSeconds(1));
        var ping = TestPackets.IPv4("100.64.0.1", "100.64.0.2", 12, 0x12);
        pair.TunA.Inject(ping);

        // Both sides' timers fired at expiry (their initiations were lost), so the new handshake
        // may wait for the next retry; crossing initiations are resolved by the jittered retries.
        byte[]? received = null;
        Assert.True(pair.AdvanceUntil(() => (received ??= pair.TunB.TryReadWritten(TimeSpan.Zero)) is not null, TimeSpan.FromSeconds(30)));
        Assert.Equal(ping, received);
    }
}
