using Microsoft.Extensions.Time.Testing;
using Modular.Plugins.Rosenpass.Protocol;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Two CryptoServers with real KEMs (McEliece-460896 static keys made once per run, ML-KEM-512)
/// exchanging datagrams in memory: the handshake, rekey, retransmission, expiry, cookies under
/// load, and bad input (truncated, bit-flipped, replayed) that is rejected while the session
/// stays usable. Time is a FakeTimeProvider: nothing sleeps.
/// </summary>
public sealed class CryptoServerTests
{
    private static readonly byte[] Psk = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();

    private sealed class Pair
    {
        public Pair(ProtocolVersion version, CryptoServerTimings? timings = null, byte[]? pskAtB = null)
        {
            Time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
            A = new CryptoServer(StaticKeys.A.Secret, StaticKeys.A.Public, Time, timings);
            B = new CryptoServer(StaticKeys.B.Secret, StaticKeys.B.Public, Time, timings);
            PeerB = A.AddPeer(StaticKeys.B.Public, Psk, version);
            PeerA = B.AddPeer(StaticKeys.A.Public, pskAtB ?? Psk, version);
        }

        public FakeTimeProvider Time { get; }

        public CryptoServer A { get; }

        public CryptoServer B { get; }

        public int PeerA { get; }

        public int PeerB { get; }

        /// <summary>The four datagrams of one exchange A -> B, all delivered; returns them.</summary>
        public byte[][] Exchange()
        {
            var initHello = Initiate();
            var respHello = Deliver(B, initHello, expectExchangeWith: null);
            var initConf = Deliver(A, respHello, expectExchangeWith: PeerB);
            var emptyData = Deliver(B, initConf, expectExchangeWith: PeerA);
            Assert.Equal(new HandleResult(null, 0), A.HandleMessage(emptyData, new byte[CryptoServer.MaxMessageSize]));
            Assert.Equal(A.OutputKey(PeerB), B.OutputKey(PeerA));
            return [initHello, respHello, initConf, emptyData];
        }

        public byte[] Initiate()
        {
            var buffer = new byte[CryptoServer.MaxMessageSize];
            return buffer[..A.InitiateHandshake(PeerB, buffer)];
        }

        public static byte[] Deliver(CryptoServer to, byte[] message, int? expectExchangeWith)
        {
            var buffer = new byte[CryptoServer.MaxMessageSize];
            var result = to.HandleMessage(message, buffer);
            Assert.Equal(expectExchangeWith, result.ExchangedWith);
            return buffer[..result.ResponseLength];
        }
    }

    private static RosenpassError Rejected(CryptoServer server, byte[] message) =>
        Assert.Throws<RosenpassProtocolException>(() => server.HandleMessage(message, new byte[CryptoServer.MaxMessageSize])).Error;

    // An attacker knows our public key, so it can always make a valid mac: rewrite it after tampering.
    private static byte[] Flip(byte[] message, int offset, ProtocolVersion version, byte[] recipientPublicKey)
    {
        var tampered = (byte[])message.Clone();
        tampered[offset] ^= 0x01;
        Envelope.WriteMac(version, Envelope.MacKey(version, recipientPublicKey), tampered);
        return tampered;
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void AFullHandshake_GivesBothSidesTheSameOutputKey(ProtocolVersion version)
    {
        var pair = new Pair(version);
        Assert.False(pair.A.HasOutputKey(pair.PeerB));
        var messages = pair.Exchange();
        Assert.Equal([Wire.InitHelloLength, Wire.RespHelloLength, Wire.InitConfLength, Wire.EmptyDataLength], messages.Select(m => m.Length));
        Assert.Equal(CryptoServer.OutputKeyLength, pair.A.OutputKey(pair.PeerB).Length);
        Assert.True(pair.B.HasOutputKey(pair.PeerA));

        // A second exchange gives a different key, again equal on both sides.
        var first = pair.A.OutputKey(pair.PeerB);
        pair.Exchange();
        Assert.NotEqual(first, pair.A.OutputKey(pair.PeerB));
    }

    [Fact]
    public void DifferentPsks_NeverAgree()
    {
        var wrong = (byte[])Psk.Clone();
        wrong[0] ^= 1;
        var pair = new Pair(ProtocolVersion.V02, pskAtB: wrong);
        Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.B, pair.Initiate()));
        Assert.False(pair.B.HasOutputKey(pair.PeerA));
    }

    [Fact]
    public void Poll_AsksForAnInitiationAtOnce_ThenRekeysAfterTheInitiatorPeriod_AndTheKeyChanges()
    {
        var timings = CryptoServerTimings.Default.ScaledBy(0.01); // rekey after 1.2 s / 1.3 s, expiry after 1.8 s
        var pair = new Pair(ProtocolVersion.V03, timings);
        Assert.Equal(PollResult.SendInitiation(pair.PeerB), pair.A.Poll());
        var keys = new List<string>();
        for (var round = 0; round < 3; round++)
        {
            pair.Exchange();
            keys.Add(Convert.ToHexString(pair.A.OutputKey(pair.PeerB)));
            var sleep = pair.A.Poll();
            Assert.Equal(PollAction.Sleep, sleep.Action);
            Assert.InRange((sleep.Until - pair.Time.GetUtcNow() - timings.RekeyAfterTimeInitiator).TotalMilliseconds, -1, 1);
            Assert.InRange((sleep.Wait - timings.RekeyAfterTimeInitiator).TotalMilliseconds, -1, 1);

            pair.Time.Advance(timings.RekeyAfterTimeInitiator - TimeSpan.FromMilliseconds(100));
            Assert.Equal(PollAction.Sleep, pair.A.Poll().Action);
            pair.Time.Advance(TimeSpan.FromMilliseconds(100));
            Assert.Equal(PollResult.SendInitiation(pair.PeerB), pair.A.Poll());
            Assert.Equal(PollAction.Sleep, pair.A.Poll().Action); // asked once, not again
        }

        Assert.Equal(3, keys.Distinct().Count());
    }

    [Fact]
    public void TheResponder_RekeysAfterItsOwnPeriod_UnlessItAlreadyDeclinedAnInitiation()
    {
        var timings = CryptoServerTimings.Default.ScaledBy(0.01);
        var pair = new Pair(ProtocolVersion.V02, timings);
        pair.Exchange();
        // B never polled before, so it never declined: its responder period (1.2 s) is due before A's (1.3 s).
        Assert.Equal(PollAction.Sleep, pair.B.Poll().Action);
        pair.Time.Advance(timings.RekeyAfterTimeResponder);
        Assert.Equal(PollResult.SendInitiation(pair.PeerA), pair.B.Poll());

        // A server that ignored its first SendInitiation is not asked again: the other side drives.
        var declined = new Pair(ProtocolVersion.V02, timings);
        Assert.Equal(PollResult.SendInitiation(declined.PeerA), declined.B.Poll());
        declined.Exchange();
        declined.Time.Advance(timings.RekeyAfterTimeResponder);
        Assert.Equal(PollAction.Sleep, declined.B.Poll().Action);
    }

    [Fact]
    public void WithNothingScheduled_PollStillSleepsAFiniteHour()
    {
        var time = new FakeTimeProvider();
        var lonely = new CryptoServer(StaticKeys.A.Secret, StaticKeys.A.Public, time);
        var poll = lonely.Poll();
        Assert.Equal(PollAction.Sleep, poll.Action);
        Assert.Equal(TimeSpan.FromHours(1), poll.Wait);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromHours(1), poll.Until);
    }

    [Fact]
    public void WithoutANewExchange_TheKeyIsDeletedAfterRejectAfterTime()
    {
        var pair = new Pair(ProtocolVersion.V02);
        pair.Exchange();
        pair.Time.Advance(TimeSpan.FromSeconds(179));
        Assert.True(pair.B.HasOutputKey(pair.PeerA));
        pair.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(PollResult.DeleteKey(pair.PeerA), pair.B.Poll());
        Assert.False(pair.B.HasOutputKey(pair.PeerA));
        Assert.Throws<InvalidOperationException>(() => pair.B.OutputKey(pair.PeerA));
    }

    [Fact]
    public void ALostInitHello_IsRetransmittedWithGrowingDelays_AndTheRetransmissionCompletes()
    {
        var pair = new Pair(ProtocolVersion.V03);
        var initHello = pair.Initiate(); // lost
        var delays = new List<double>();
        byte[] retransmitted = [];
        for (var n = 0; n < 7; n++)
        {
            var sleep = pair.A.Poll();
            Assert.Equal(PollAction.Sleep, sleep.Action);
            var delay = (sleep.Until - pair.Time.GetUtcNow()).TotalSeconds;
            delays.Add(delay);
            pair.Time.Advance(sleep.Until - pair.Time.GetUtcNow());
            Assert.Equal(PollResult.SendRetransmission(pair.PeerB), pair.A.Poll());
            var buffer = new byte[CryptoServer.MaxMessageSize];
            retransmitted = buffer[..pair.A.RetransmitHandshake(pair.PeerB, buffer)];
            Assert.Equal(initHello, retransmitted);
        }

        // Upstream's schedule: [0.25, 0.5) s, doubling, capped at [5, 10) s.
        double[] low = [0.25, 0.5, 1, 2, 4, 5, 5];
        for (var n = 0; n < delays.Count; n++)
        {
            Assert.InRange(delays[n], low[n] - 0.001, (2 * low[n]) + 0.001);
        }

        var respHello = Pair.Deliver(pair.B, retransmitted, null);
        var initConf = Pair.Deliver(pair.A, respHello, pair.PeerB);
        Pair.Deliver(pair.B, initConf, pair.PeerA);
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
    }

    [Fact]
    public void ALostEmptyData_MakesTheInitiatorResendInitConf_AndTheResponderAnswersFromCache()
    {
        var pair = new Pair(ProtocolVersion.V02);
        var respHello = Pair.Deliver(pair.B, pair.Initiate(), null);
        var initConf = Pair.Deliver(pair.A, respHello, pair.PeerB);
        var emptyData = Pair.Deliver(pair.B, initConf, pair.PeerA); // lost
        var key = pair.B.OutputKey(pair.PeerA);

        var sleep = pair.A.Poll();
        pair.Time.Advance(sleep.Until - pair.Time.GetUtcNow());
        Assert.Equal(PollResult.SendRetransmission(pair.PeerB), pair.A.Poll());
        var buffer = new byte[CryptoServer.MaxMessageSize];
        var again = buffer[..pair.A.RetransmitHandshake(pair.PeerB, buffer)];
        Assert.Equal(initConf, again);

        var emptyDataAgain = Pair.Deliver(pair.B, again, null); // no second exchange
        Assert.Equal(emptyData, emptyDataAgain);
        Assert.Equal(key, pair.B.OutputKey(pair.PeerA));
        Assert.Equal(new HandleResult(null, 0), pair.A.HandleMessage(emptyDataAgain, buffer));
        Assert.Throws<InvalidOperationException>(() => pair.A.RetransmitHandshake(pair.PeerB, buffer));
    }

    [Fact]
    public void AnUnansweredHandshake_IsDroppedAfterRejectAfterTime_AndANewInitiationIsDue()
    {
        var pair = new Pair(ProtocolVersion.V02);
        Assert.Equal(PollResult.SendInitiation(pair.PeerB), pair.A.Poll());
        pair.Initiate();
        var end = pair.Time.GetUtcNow() + TimeSpan.FromSeconds(180);
        var retransmissions = 0;
        while (true)
        {
            var poll = pair.A.Poll();
            if (poll.Action == PollAction.SendInitiation)
            {
                break;
            }

            if (poll.Action == PollAction.SendRetransmission)
            {
                retransmissions++;
                continue;
            }

            Assert.Equal(PollAction.Sleep, poll.Action);
            Assert.True(poll.Until <= end, "slept past the handshake's end");
            pair.Time.Advance(poll.Until - pair.Time.GetUtcNow());
        }

        Assert.InRange((pair.Time.GetUtcNow() - end).TotalMilliseconds, -5, 5);
        Assert.InRange(retransmissions, 18, 40); // about 180 s / 7.5 s on average, after the ramp
        Assert.Throws<InvalidOperationException>(() => pair.A.RetransmitHandshake(pair.PeerB, new byte[CryptoServer.MaxMessageSize]));
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void TruncatedOrExtendedMessages_AreRejected_AndTheHandshakeStillCompletes(ProtocolVersion version)
    {
        var pair = new Pair(version);
        var initHello = pair.Initiate();
        foreach (var bad in new[] { initHello[..^1], initHello[..100], initHello.Concat(new byte[1]).ToArray(), initHello[..1] })
        {
            Assert.Equal(RosenpassError.WrongLength, Rejected(pair.B, bad));
        }

        var respHello = Pair.Deliver(pair.B, initHello, null);
        Assert.Equal(RosenpassError.WrongLength, Rejected(pair.A, respHello[..^16]));
        var initConf = Pair.Deliver(pair.A, respHello, pair.PeerB);
        Assert.Equal(RosenpassError.WrongLength, Rejected(pair.B, initConf[..^1]));
        var emptyData = Pair.Deliver(pair.B, initConf, pair.PeerA);
        Assert.Equal(RosenpassError.WrongLength, Rejected(pair.A, emptyData[..63]));
        Assert.Equal(new HandleResult(null, 0), pair.A.HandleMessage(emptyData, new byte[CryptoServer.MaxMessageSize]));
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void BitFlips_AreRejectedAtEveryStep_AndTheOriginalMessagesStillComplete(ProtocolVersion version)
    {
        var pair = new Pair(version);
        var a = StaticKeys.A.Public;
        var b = StaticKeys.B.Public;

        // Without a fresh mac, any flip before the mac fails the mac.
        var initHello = pair.Initiate();
        foreach (var offset in new[] { 0, 3, 4, 500, initHello.Length - 33, initHello.Length - 32 })
        {
            var flipped = (byte[])initHello.Clone();
            flipped[offset] ^= 0x40;
            Assert.Contains(Rejected(pair.B, flipped), new[] { RosenpassError.BadMac, RosenpassError.UnknownMessageType });
        }

        // With a valid mac, each field's flip fails authentication: sidi(4) epki(8) sctr(808) pidi_ct(964) auth(1012).
        foreach (var offset in new[] { 4, 8, 807, 808, 963, 964, 1011, 1012, 1027 })
        {
            Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.B, Flip(initHello, offset, version, b)));
        }

        var respHello = Pair.Deliver(pair.B, initHello, null);
        // RespHello: sidr(4) sidi(8) ecti(12) scti(780) auth(936) biscuit(952).
        foreach (var offset in new[] { 4, 12, 779, 780, 935, 936, 951, 952, 1067 })
        {
            Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.A, Flip(respHello, offset, version, a)));
        }

        Assert.Equal(RosenpassError.UnknownSession, Rejected(pair.A, Flip(respHello, 8, version, a)));

        var initConf = Pair.Deliver(pair.A, respHello, pair.PeerB);
        // InitConf: sidi(4) sidr(8) biscuit(12) auth(128).
        foreach (var offset in new[] { 4, 8, 12, 36, 127, 128, 143 })
        {
            Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.B, Flip(initConf, offset, version, b)));
        }

        var emptyData = Pair.Deliver(pair.B, initConf, pair.PeerA);
        // EmptyData: sid(4) ctr(8) auth(16).
        Assert.Equal(RosenpassError.UnknownSession, Rejected(pair.A, Flip(emptyData, 4, version, a)));
        Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.A, Flip(emptyData, 8, version, a)));
        Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.A, Flip(emptyData, 16, version, a)));
        Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.A, Flip(emptyData, 31, version, a)));

        Assert.Equal(new HandleResult(null, 0), pair.A.HandleMessage(emptyData, new byte[CryptoServer.MaxMessageSize]));
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void RandomPayloadsWithAValidMac_AreRejectedWithATypedError_AndTheHandshakeStillCompletes(ProtocolVersion version)
    {
        var pair = new Pair(version);
        var random = new Random(20261206);
        var initHello = pair.Initiate();
        var sidi = initHello[4..8];
        var respHello = Pair.Deliver(pair.B, initHello, null);
        var cases = new (MessageType Type, CryptoServer To, byte[]? RecipientKey)[]
        {
            (MessageType.InitHello, pair.B, StaticKeys.B.Public),
            (MessageType.RespHello, pair.A, StaticKeys.A.Public),
            (MessageType.InitConf, pair.B, StaticKeys.B.Public),
            (MessageType.EmptyData, pair.A, StaticKeys.A.Public),
            (MessageType.CookieReply, pair.A, null),
        };
        foreach (var (type, to, recipientKey) in cases)
        {
            for (var i = 0; i < 6; i++)
            {
                var message = new byte[Wire.LengthOf(type)];
                random.NextBytes(message);
                message[0] = (byte)type;
                message.AsSpan(1, 3).Clear();
                if (i % 2 == 0)
                {
                    // Name the live handshake, so the message gets past the session lookup into the cryptography.
                    sidi.CopyTo(message, type == MessageType.RespHello ? 8 : 4);
                }

                if (recipientKey is not null)
                {
                    Envelope.WriteMac(version, Envelope.MacKey(version, recipientKey), message);
                }

                Assert.Throws<RosenpassProtocolException>(() => to.HandleMessage(message, new byte[CryptoServer.MaxMessageSize]));
            }
        }

        var initConf = Pair.Deliver(pair.A, respHello, pair.PeerB);
        var emptyData = Pair.Deliver(pair.B, initConf, pair.PeerA);
        Assert.Equal(new HandleResult(null, 0), pair.A.HandleMessage(emptyData, new byte[CryptoServer.MaxMessageSize]));
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
    }

    [Fact]
    public void ReplayedMessages_AreRejected_AndDoNotDisturbTheLiveKey()
    {
        var pair = new Pair(ProtocolVersion.V02);
        var old = pair.Exchange();
        var key = pair.A.OutputKey(pair.PeerB);

        // A replayed InitHello costs the responder a RespHello (it is stateless) but completes nothing:
        // the initiator has no handshake waiting for it.
        var replayAnswer = Pair.Deliver(pair.B, old[0], null);
        Assert.Equal(RosenpassError.UnknownSession, Rejected(pair.A, replayAnswer));
        Assert.Equal(RosenpassError.UnknownSession, Rejected(pair.A, old[1]));
        Assert.Equal(RosenpassError.UnknownSession, Rejected(pair.A, old[3]));

        // The last InitConf is answered from the cache, without a new exchange.
        Assert.Equal(old[3], Pair.Deliver(pair.B, old[2], null));

        // After a newer exchange the old InitConf's biscuit is outdated.
        pair.Exchange();
        Assert.Equal(RosenpassError.Replayed, Rejected(pair.B, old[2]));
        Assert.NotEqual(key, pair.A.OutputKey(pair.PeerB));
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));
    }

    [Fact]
    public void ARespHelloReplayedWithinTheHandshake_IsRejectedAsUnexpected()
    {
        var pair = new Pair(ProtocolVersion.V03);
        var respHello = Pair.Deliver(pair.B, pair.Initiate(), null);
        Pair.Deliver(pair.A, respHello, pair.PeerB);
        Assert.Equal(RosenpassError.UnexpectedMessage, Rejected(pair.A, respHello));
    }

    [Fact]
    public void AStrangerOrARemovedPeer_IsRefused()
    {
        var time = new FakeTimeProvider();
        var stranger = new CryptoServer(StaticKeys.C.Secret, StaticKeys.C.Public, time);
        var b = new CryptoServer(StaticKeys.B.Secret, StaticKeys.B.Public, time);
        var peerA = b.AddPeer(StaticKeys.A.Public, null);
        var toB = stranger.AddPeer(StaticKeys.B.Public, null);
        var buffer = new byte[CryptoServer.MaxMessageSize];
        var initHello = buffer[..stranger.InitiateHandshake(toB, buffer)];
        Assert.Equal(RosenpassError.UnknownPeer, Rejected(b, initHello));

        var pair = new Pair(ProtocolVersion.V02);
        var fromA = pair.Initiate();
        pair.B.RemovePeer(pair.PeerA);
        Assert.Equal(RosenpassError.UnknownPeer, Rejected(pair.B, fromA));
        Assert.Throws<ArgumentException>(() => pair.B.OutputKey(pair.PeerA));
        _ = peerA;
    }

    [Fact]
    public void UnderLoad_AnInitHelloWithoutCookie_GetsACookieReply_AndTheRetransmissionWithTheCookieIsServed()
    {
        var pair = new Pair(ProtocolVersion.V03);
        byte[] host = [10, 0, 0, 1, 0x27, 0x0f];
        var buffer = new byte[CryptoServer.MaxMessageSize];
        var initHello = pair.Initiate();

        var result = pair.B.HandleMessageUnderLoad(initHello, buffer, host);
        Assert.Equal(new HandleResult(null, Wire.CookieReplyLength), result);
        var cookieReply = buffer[..result.ResponseLength];
        Assert.Equal((byte)MessageType.CookieReply, cookieReply[0]);

        // A forged CookieReply does not open; the real one makes A retransmit at once with the cookie.
        var forged = (byte[])cookieReply.Clone();
        forged[20] ^= 1;
        Assert.Equal(RosenpassError.AuthenticationFailed, Rejected(pair.A, forged));
        Assert.Equal(new HandleResult(null, 0), pair.A.HandleMessage(cookieReply, buffer));
        Assert.Equal(PollResult.SendRetransmission(pair.PeerB), pair.A.Poll());
        var withCookie = buffer[..pair.A.RetransmitHandshake(pair.PeerB, buffer)];
        Assert.Equal(initHello[..^16], withCookie[..^16]);
        Assert.NotEqual(initHello[^16..], withCookie[^16..]);

        // The cookie is bound to the sender's address.
        Assert.Equal(Wire.CookieReplyLength, pair.B.HandleMessageUnderLoad(withCookie, buffer, [10, 0, 0, 2, 0x27, 0x0f]).ResponseLength);
        result = pair.B.HandleMessageUnderLoad(withCookie, buffer, host);
        Assert.Equal(Wire.RespHelloLength, result.ResponseLength);
        var initConf = Pair.Deliver(pair.A, buffer[..result.ResponseLength], pair.PeerB);

        // InitConf is served under load without a cookie (its biscuit proves the round trip).
        result = pair.B.HandleMessageUnderLoad(initConf, buffer, [1, 2, 3]);
        Assert.Equal(pair.PeerA, result.ExchangedWith);
        Assert.Equal(pair.A.OutputKey(pair.PeerB), pair.B.OutputKey(pair.PeerA));

        // Other types are not processed under load.
        var error = Assert.Throws<RosenpassProtocolException>(() => pair.A.HandleMessageUnderLoad(buffer.AsSpan(0, result.ResponseLength), new byte[CryptoServer.MaxMessageSize], host));
        Assert.Equal(RosenpassError.NotProcessedUnderLoad, error.Error);
    }

    [Fact]
    public void AVersionMismatch_NeverCompletes()
    {
        var time = new FakeTimeProvider();
        var a = new CryptoServer(StaticKeys.A.Secret, StaticKeys.A.Public, time);
        var b = new CryptoServer(StaticKeys.B.Secret, StaticKeys.B.Public, time);
        var toB = a.AddPeer(StaticKeys.B.Public, null, ProtocolVersion.V03);
        b.AddPeer(StaticKeys.A.Public, null, ProtocolVersion.V02);
        var buffer = new byte[CryptoServer.MaxMessageSize];
        var initHello = buffer[..a.InitiateHandshake(toB, buffer)];
        Assert.Equal(RosenpassError.UnknownPeer, Rejected(b, initHello));
    }
}
