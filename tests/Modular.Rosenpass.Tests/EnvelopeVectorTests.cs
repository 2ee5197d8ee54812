using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// The four datagrams of the vectors, rebuilt byte for byte from the replayed fields (layout,
/// mac to the recipient, cookie from the initiator's cookie value), and the mac/cookie checks.
/// </summary>
public sealed class EnvelopeVectorTests
{
    public static TheoryData<ProtocolVersion, string> Versions => new()
    {
        { ProtocolVersion.V03, "V03" },
        { ProtocolVersion.V02, "V02" },
    };

    private static byte[] CookieValueA => Inputs.Bytes("cookie_value_a");

    private static List<System.Text.Json.JsonElement> Messages(string vectorName) =>
        Handshake(vectorName).GetProperty("messages").EnumerateArray().ToList();

    [Theory]
    [MemberData(nameof(Versions))]
    public void TheFourMessages_AreRebuiltByteForByte(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var messages = Messages(vectorName);
        Assert.Equal(["InitHello", "RespHello", "InitConf", "EmptyData"], messages.Select(m => m.GetProperty("name").GetString()));
        Assert.Equal(Hex(messages[0].Bytes()), Hex(replay.InitHello(version, CookieValueA)));
        Assert.Equal(Hex(messages[1].Bytes()), Hex(replay.RespHello(version)));
        Assert.Equal(Hex(messages[2].Bytes()), Hex(replay.InitConf(version, CookieValueA)));

        // Upstream's official EmptyData carries stale bytes in its (never written, never read) cookie
        // field; we send zeros, which is the vectors' hex_with_zero_cookie.
        var emptyData = replay.EmptyDataMessage(version);
        var expected = messages[3].TryGetProperty("hex_with_zero_cookie", out var zeroCookie) ? zeroCookie.Bytes() : messages[3].Bytes();
        Assert.Equal(Hex(expected), Hex(emptyData));
        Assert.Equal(Hex(messages[3].Bytes().AsSpan(0, 48)), Hex(emptyData.AsSpan(0, 48)));
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void MacKeys_MatchTheVectors_AndEachRecipientAcceptsItsMessages(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var toResponder = Envelope.MacKey(version, replay.Spkr);
        var toInitiator = Envelope.MacKey(version, replay.Spki);
        var messages = Messages(vectorName);
        byte[][] keys = [toResponder, toInitiator, toResponder, toInitiator];
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(messages[i].GetProperty("mac_key_H_mac_spkt").GetString(), Hex(keys[i]));
            Assert.True(Envelope.VerifyMac(version, keys[i], messages[i].Bytes()));
            Assert.False(Envelope.VerifyMac(version, keys[(i + 1) % 2], messages[i].Bytes()), "a message for the other peer was accepted");
        }
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void AnyFlippedByteBeforeTheMac_FailsTheMac(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var initConf = Messages(vectorName)[2].Bytes();
        var key = Envelope.MacKey(version, replay.Spkr);
        for (var i = 0; i < initConf.Length - Envelope.CookieLength; i++)
        {
            var tampered = (byte[])initConf.Clone();
            tampered[i] ^= 0x04;
            Assert.False(Envelope.VerifyMac(version, key, tampered), $"flipped byte {i} passed the mac");
        }

        var otherVersion = version == ProtocolVersion.V02 ? ProtocolVersion.V03 : ProtocolVersion.V02;
        Assert.False(Envelope.VerifyMac(otherVersion, Envelope.MacKey(otherVersion, replay.Spkr), initConf));
        Assert.False(Envelope.VerifyMac(version, key, initConf.AsSpan(0, Envelope.Overhead - 1)));
    }

    [Theory]
    [InlineData("V03")]
    [InlineData("V02")]
    public void TheCookie_IsCheckedAgainstTheSendersCookieValue_WhateverTheVersion(string vectorName)
    {
        var initHello = Messages(vectorName)[0].Bytes();
        Assert.True(Envelope.VerifyCookie(CookieValueA, initHello));
        var wrongValue = CookieValueA;
        wrongValue[0] ^= 1;
        Assert.False(Envelope.VerifyCookie(wrongValue, initHello));
        initHello[10] ^= 1;
        Assert.False(Envelope.VerifyCookie(CookieValueA, initHello));
    }

    [Fact]
    public void CookieReply_MatchesTheComputedExample_AndOpensOnlyForItsMessage()
    {
        var example = Root.GetProperty("cookie_reply_example_computed");
        var cookieValue = CookieReply.CookieValue(example.Bytes("cookie_secret"), example.Bytes("host_identification"));
        Assert.Equal(example.Get("cookie_value").GetString(), Hex(cookieValue));
        var cookieKey = CookieReply.CookieKey(Inputs.Bytes("peer_b_pk"));
        Assert.Equal(example.Get("cookie_key").GetString(), Hex(cookieKey));

        var ad = example.Bytes("ad");
        var initHello = Messages("V03")[0].Bytes();
        Assert.Equal(Hex(ad), Hex(initHello.AsSpan(initHello.Length - 32, 16)));
        var sealedCookie = CookieReply.Seal(cookieKey, example.Bytes("nonce"), ad, cookieValue);
        Assert.Equal(example.Get("cookie_encrypted").GetString(), Hex(sealedCookie));

        var opened = new byte[16];
        Assert.True(CookieReply.TryOpen(cookieKey, ad, sealedCookie, opened));
        Assert.Equal(cookieValue, opened);
        var otherMac = (byte[])ad.Clone();
        otherMac[0] ^= 1;
        Assert.False(CookieReply.TryOpen(cookieKey, otherMac, sealedCookie, opened));

        // The InitHello resent with this cookie value carries the example's cookie field.
        Envelope.WriteCookie(cookieValue, initHello);
        Assert.Equal(example.Get("cookie_field_of_InitHello_resent_with_this_value").GetString(), Hex(initHello.AsSpan(initHello.Length - 16)));
    }
}
