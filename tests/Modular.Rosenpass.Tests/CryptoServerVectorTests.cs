using Microsoft.Extensions.Time.Testing;
using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// The vectors' handshake driven through two real <see cref="CryptoServer"/>s, with the recorded KEM
/// outputs and random values injected: every datagram each side writes must equal the official one
/// byte for byte, and each side must accept the other's official message and reach the official
/// output key. This tests our parsing and processing against upstream's transcript, not only
/// against our own sender.
/// </summary>
public sealed class CryptoServerVectorTests
{
    public static TheoryData<ProtocolVersion, string> Versions => new()
    {
        { ProtocolVersion.V03, "V03" },
        { ProtocolVersion.V02, "V02" },
    };

    private sealed record Transcript(CryptoServer A, int PeerB, CryptoServer B, int PeerA, byte[][] Messages, byte[] Osk);

    private static Transcript Setup(ProtocolVersion version, string vectorName)
    {
        var inputs = Inputs;
        var spki = inputs.Bytes("peer_a_pk");
        var spkr = inputs.Bytes("peer_b_pk");
        var psk = inputs.Bytes("psk");
        var kem = new RecordedKem(McElieceKem.PublicKeySize, McElieceKem.CiphertextSize)
            .Encapsulation(spkr, inputs.Bytes("IHI5 shk"), inputs.Bytes("IHI5 sctr"))
            .Encapsulation(inputs.Bytes("epki"), inputs.Bytes("RHR4 shk"), inputs.Bytes("RHR4 ecti"))
            .Encapsulation(spki, inputs.Bytes("RHR5 shk"), inputs.Bytes("RHR5 scti"))
            .KeyPair(inputs.Bytes("eski"), inputs.Bytes("epki"));
        var time = new FakeTimeProvider();
        var a = new CryptoServer(inputs.Bytes("peer_a_sk"), spki, time, null, kem, kem)
        {
            RandomSource = new ScriptedRandom().Add(inputs.Bytes("sidi")).Add(inputs.Bytes("cookie_value_a")).Next,
        };
        var b = new CryptoServer(inputs.Bytes("peer_b_sk"), spkr, time, null, kem, kem)
        {
            RandomSource = new ScriptedRandom().Add(inputs.Bytes("biscuit_key")).Add(inputs.Bytes("biscuit nonce as drawn")).Add(inputs.Bytes("sidr")).Next,
        };
        var messages = Handshake(vectorName).GetProperty("messages").EnumerateArray().Select(m => m.Bytes()).ToArray();
        var osk = Handshake(vectorName).GetProperty("live").Bytes("osk_wireguard_psk");
        return new Transcript(a, a.AddPeer(spkr, psk, version), b, b.AddPeer(spki, psk, version), messages, osk);
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void BothServers_WriteTheOfficialDatagrams_AndReachTheOfficialOutputKey(ProtocolVersion version, string vectorName)
    {
        var t = Setup(version, vectorName);
        var buffer = new byte[CryptoServer.MaxMessageSize];

        var length = t.A.InitiateHandshake(t.PeerB, buffer);
        Assert.Equal(Hex(t.Messages[0]), Hex(buffer.AsSpan(0, length)));

        var result = t.B.HandleMessage(t.Messages[0], buffer);
        Assert.Null(result.ExchangedWith);
        Assert.Equal(Hex(t.Messages[1]), Hex(buffer.AsSpan(0, result.ResponseLength)));

        result = t.A.HandleMessage(t.Messages[1], buffer);
        Assert.Equal(t.PeerB, result.ExchangedWith);
        Assert.Equal(Hex(t.Messages[2]), Hex(buffer.AsSpan(0, result.ResponseLength)));
        Assert.Equal(Hex(t.Osk), Hex(t.A.OutputKey(t.PeerB)));

        result = t.B.HandleMessage(t.Messages[2], buffer);
        Assert.Equal(t.PeerA, result.ExchangedWith);
        Assert.Equal(Wire.EmptyDataLength, result.ResponseLength);
        // Upstream's EmptyData cookie field is stale buffer bytes; we write zeros.
        Assert.Equal(Hex(t.Messages[3].AsSpan(0, 48)), Hex(buffer.AsSpan(0, 48)));
        Assert.All(buffer.AsSpan(48, 16).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(Hex(t.Osk), Hex(t.B.OutputKey(t.PeerA)));

        // The official EmptyData (with its stale cookie field, which nobody checks) ends A's handshake.
        result = t.A.HandleMessage(t.Messages[3], buffer);
        Assert.Equal(new HandleResult(null, 0), result);
        Assert.Throws<InvalidOperationException>(() => t.A.RetransmitHandshake(t.PeerB, buffer));
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void ThePeerOfTheOtherVersion_RejectsTheTranscript(ProtocolVersion version, string vectorName)
    {
        var other = version == ProtocolVersion.V02 ? ProtocolVersion.V03 : ProtocolVersion.V02;
        var t = Setup(other, vectorName);
        var buffer = new byte[CryptoServer.MaxMessageSize];
        var error = Assert.Throws<RosenpassProtocolException>(() => t.B.HandleMessage(t.Messages[0], buffer));
        Assert.Equal(RosenpassError.UnknownPeer, error.Error);
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void TheOfficialInitConf_IsAnsweredFromCacheWhenRepeated_ButNeverCompletesTwice(ProtocolVersion version, string vectorName)
    {
        var t = Setup(version, vectorName);
        var buffer = new byte[CryptoServer.MaxMessageSize];
        t.B.HandleMessage(t.Messages[0], buffer);
        var first = t.B.HandleMessage(t.Messages[2], buffer);
        var firstEmptyData = buffer.AsSpan(0, first.ResponseLength).ToArray();
        Assert.Equal(t.PeerA, first.ExchangedWith);

        // A retransmitted InitConf (our EmptyData got lost) gets the same EmptyData, and no second exchange.
        var again = t.B.HandleMessage(t.Messages[2], buffer);
        Assert.Null(again.ExchangedWith);
        Assert.Equal(Hex(firstEmptyData), Hex(buffer.AsSpan(0, again.ResponseLength)));
    }
}
