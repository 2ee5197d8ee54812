using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>The wire layouts against the vectors' constants and official datagrams, and the typed rejection of malformed input.</summary>
public sealed class WireMessageTests
{
    private static byte[][] Official => Handshake("V03").GetProperty("messages").EnumerateArray().Select(m => m.Bytes()).ToArray();

    [Fact]
    public void Lengths_MatchTheVectorsConstants()
    {
        var payloads = Root.GetProperty("constants").GetProperty("payloads");
        Assert.Equal(Wire.InitHelloLength, payloads.GetProperty("InitHello").GetProperty("envelope").GetInt32());
        Assert.Equal(Wire.RespHelloLength, payloads.GetProperty("RespHello").GetProperty("envelope").GetInt32());
        Assert.Equal(Wire.InitConfLength, payloads.GetProperty("InitConf").GetProperty("envelope").GetInt32());
        Assert.Equal(Wire.EmptyDataLength, payloads.GetProperty("EmptyData").GetProperty("envelope").GetInt32());
        Assert.Equal(Wire.CookieReplyLength, payloads.GetProperty("CookieReply").GetProperty("total").GetInt32());
        Assert.Equal(CryptoServer.MaxMessageSize, Root.GetProperty("constants").GetProperty("max_message_len").GetInt32());
    }

    [Fact]
    public void TheOfficialDatagrams_ParseIntoTheRecordedFields_AndWriteBackIdentically()
    {
        var inputs = Inputs;
        var replay = new HandshakeReplay(ProtocolVersion.V03);
        var m = Official;

        var ih = InitHelloMessage.Parse(m[0]);
        Assert.Equal(inputs.Bytes("sidi"), ih.Sidi);
        Assert.Equal(inputs.Bytes("epki"), ih.Epki);
        Assert.Equal(inputs.Bytes("IHI5 sctr"), ih.Sctr);
        Assert.Equal(replay.PidiCt, ih.PidiCt);
        Assert.Equal(replay.InitHelloAuth, ih.Auth);

        var rh = RespHelloMessage.Parse(m[1]);
        Assert.Equal(inputs.Bytes("sidr"), rh.Sidr);
        Assert.Equal(inputs.Bytes("sidi"), rh.Sidi);
        Assert.Equal(inputs.Bytes("RHR4 ecti"), rh.Ecti);
        Assert.Equal(inputs.Bytes("RHR5 scti"), rh.Scti);
        Assert.Equal(replay.RespHelloAuth, rh.Auth);
        Assert.Equal(replay.BiscuitCt, rh.Biscuit);

        var ic = InitConfMessage.Parse(m[2]);
        Assert.Equal(inputs.Bytes("sidi"), ic.Sidi);
        Assert.Equal(inputs.Bytes("sidr"), ic.Sidr);
        Assert.Equal(replay.BiscuitCt, ic.Biscuit);
        Assert.Equal(replay.InitConfAuth, ic.Auth);

        var ed = EmptyDataMessage.Parse(m[3]);
        Assert.Equal(inputs.Bytes("sidi"), ed.Sid);
        Assert.Equal(0UL, ed.Counter);
        Assert.Equal(EmptyData.Auth(replay.Txkr, 0), ed.Auth);

        // Written back, everything before mac and cookie is identical.
        var buffer = new byte[CryptoServer.MaxMessageSize];
        Assert.Equal(Hex(m[0].AsSpan(0, m[0].Length - 32)), Hex(buffer.AsSpan(0, ih.WriteTo(buffer) - 32)));
        Assert.Equal(Hex(m[1].AsSpan(0, m[1].Length - 32)), Hex(buffer.AsSpan(0, rh.WriteTo(buffer) - 32)));
        Assert.Equal(Hex(m[2].AsSpan(0, m[2].Length - 32)), Hex(buffer.AsSpan(0, ic.WriteTo(buffer) - 32)));
        Assert.Equal(Hex(m[3].AsSpan(0, m[3].Length - 32)), Hex(buffer.AsSpan(0, ed.WriteTo(buffer) - 32)));
    }

    [Fact]
    public void EveryWrongLength_IsRejectedWithATypedError()
    {
        foreach (var message in Official)
        {
            foreach (var length in new[] { 1, 4, message.Length - 1, message.Length + 1, CryptoServer.MaxMessageSize })
            {
                var wrong = new byte[length];
                message.AsSpan(0, Math.Min(length, message.Length)).CopyTo(wrong);
                var error = Assert.Throws<RosenpassProtocolException>(() => Wire.ReadType(wrong));
                Assert.Equal(RosenpassError.WrongLength, error.Error);
            }
        }

        Assert.Equal(RosenpassError.WrongLength, Assert.Throws<RosenpassProtocolException>(() => Wire.ReadType([])).Error);
    }

    [Theory]
    [InlineData(0x00)]
    [InlineData(0x80)]
    [InlineData(0x85)]
    [InlineData(0x87)]
    [InlineData(0xff)]
    public void UnknownTypes_AreRejected(byte type)
    {
        var message = (byte[])Official[0].Clone();
        message[0] = type;
        Assert.Equal(RosenpassError.UnknownMessageType, Assert.Throws<RosenpassProtocolException>(() => Wire.ReadType(message)).Error);
    }

    [Fact]
    public void AMessageOfAnotherType_IsNotParsedAsThisOne()
    {
        var error = Assert.Throws<RosenpassProtocolException>(() => RespHelloMessage.Parse(Official[0]));
        Assert.Equal(RosenpassError.UnexpectedMessage, error.Error);
    }

    [Fact]
    public void CookieReply_RoundTrips_WithRandomPadding()
    {
        var sid = new byte[] { 1, 2, 3, 4 };
        var encrypted = Enumerable.Range(0, CookieReply.EncryptedLength).Select(i => (byte)i).ToArray();
        var first = new byte[Wire.CookieReplyLength];
        var second = new byte[Wire.CookieReplyLength];
        new CookieReplyMessage(sid, encrypted).WriteTo(first);
        new CookieReplyMessage(sid, encrypted).WriteTo(second);
        var parsed = CookieReplyMessage.Parse(first);
        Assert.Equal(0x86, first[0]);
        Assert.Equal(sid, parsed.Sid);
        Assert.Equal(encrypted, parsed.CookieEncrypted);
        Assert.NotEqual(Hex(first.AsSpan(64)), Hex(second.AsSpan(64)));
    }
}
