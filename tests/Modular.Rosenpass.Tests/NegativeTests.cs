using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>A wrong key or any changed input byte must fail, and a failure must not move the chain.</summary>
public sealed class NegativeTests
{
    private static ChainingKey ResponderAtIhr6(HandshakeReplay replay, ProtocolVersion version) =>
        ChainingKey.Init(version, replay.Spkr).Mix(replay.Sidi).Mix(replay.Epki)
            .MixKem(replay.Spkr, Inputs.Bytes("IHI5 shk"), replay.Sctr);

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void ATamperedPidiCt_IsRejected_AndLeavesTheChainAlone(ProtocolVersion version)
    {
        var replay = new HandshakeReplay(version);
        for (var i = 0; i < replay.PidiCt.Length; i++)
        {
            var ck = ResponderAtIhr6(replay, version);
            var before = Hex(ck.Value);
            var tampered = (byte[])replay.PidiCt.Clone();
            tampered[i] ^= 0x80;
            var pidi = new byte[PeerId.Length];
            Assert.False(ck.TryDecryptAndMix(tampered, pidi), $"flipped byte {i} was accepted");
            Assert.Equal(before, Hex(ck.Value));
            Assert.All(pidi, b => Assert.Equal(0, b));
        }
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void AWrongPsk_OrAWrongKemSharedKey_FailsInitHelloAuth(ProtocolVersion version)
    {
        var replay = new HandshakeReplay(version);
        var wrongPsk = (byte[])replay.Psk.Clone();
        wrongPsk[0] ^= 1;
        var ck = ResponderAtIhr6(replay, version);
        Assert.True(ck.TryDecryptAndMix(replay.PidiCt, new byte[PeerId.Length]));
        ck.Mix(replay.Spki).Mix(wrongPsk);
        Assert.False(ck.TryDecryptAndMix(replay.InitHelloAuth, []));

        var wrongShk = Inputs.Bytes("IHI5 shk");
        wrongShk[31] ^= 1;
        var other = ChainingKey.Init(version, replay.Spkr).Mix(replay.Sidi).Mix(replay.Epki).MixKem(replay.Spkr, wrongShk, replay.Sctr);
        Assert.False(other.TryDecryptAndMix(replay.PidiCt, new byte[PeerId.Length]));
    }

    [Theory]
    [InlineData(ProtocolVersion.V02)]
    [InlineData(ProtocolVersion.V03)]
    public void ABiscuit_OpensOnlyWithItsKeyAndItsBinding(ProtocolVersion version)
    {
        var replay = new HandshakeReplay(version);
        bool Open(byte[] key, byte[] biscuit, byte[] spkr, byte[] sidi, byte[] sidr) =>
            Biscuit.TryOpen(version, key, biscuit, spkr, sidi, sidr, out _);

        Assert.True(Open(replay.BiscuitKey, replay.BiscuitCt, replay.Spkr, replay.Sidi, replay.Sidr));
        var wrongKey = (byte[])replay.BiscuitKey.Clone();
        wrongKey[5] ^= 1;
        Assert.False(Open(wrongKey, replay.BiscuitCt, replay.Spkr, replay.Sidi, replay.Sidr));
        Assert.False(Open(replay.BiscuitKey, replay.BiscuitCt, replay.Spki, replay.Sidi, replay.Sidr));
        Assert.False(Open(replay.BiscuitKey, replay.BiscuitCt, replay.Spkr, replay.Sidr, replay.Sidi));
        Assert.False(Open(replay.BiscuitKey, replay.BiscuitCt[..^1], replay.Spkr, replay.Sidi, replay.Sidr));
        for (var i = 0; i < replay.BiscuitCt.Length; i++)
        {
            var tampered = (byte[])replay.BiscuitCt.Clone();
            tampered[i] ^= 0x01;
            Assert.False(Open(replay.BiscuitKey, tampered, replay.Spkr, replay.Sidi, replay.Sidr), $"flipped byte {i} was accepted");
        }

        // The other version's AD differs, so a biscuit never crosses versions.
        var otherVersion = version == ProtocolVersion.V02 ? ProtocolVersion.V03 : ProtocolVersion.V02;
        Assert.False(Biscuit.TryOpen(otherVersion, replay.BiscuitKey, replay.BiscuitCt, replay.Spkr, replay.Sidi, replay.Sidr, out _));
    }

    [Fact]
    public void ABiscuitNonce_CarriesTheKeyIndexInItsTopBit()
    {
        var replay = new HandshakeReplay(ProtocolVersion.V03);
        var nonce = new byte[24];
        var zero = Biscuit.Seal(ProtocolVersion.V03, replay.BiscuitKey, 0, nonce, replay.BiscuitPlaintextContents, replay.Spkr, replay.Sidi, replay.Sidr);
        nonce[0] = 0x7f;
        var one = Biscuit.Seal(ProtocolVersion.V03, replay.BiscuitKey, 1, nonce, replay.BiscuitPlaintextContents, replay.Spkr, replay.Sidi, replay.Sidr);
        Assert.Equal(0, Biscuit.KeyIndex(zero));
        Assert.Equal(1, Biscuit.KeyIndex(one));
        Assert.Equal(0xff, one[0]);
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            Biscuit.Seal(ProtocolVersion.V03, replay.BiscuitKey, 2, nonce, replay.BiscuitPlaintextContents, replay.Spkr, replay.Sidi, replay.Sidr));
    }

    [Fact]
    public void EmptyDataAuth_FailsForAnotherKeyOrCounter()
    {
        var replay = new HandshakeReplay(ProtocolVersion.V03);
        var auth = EmptyData.Auth(replay.Txkr, 0);
        Assert.True(EmptyData.VerifyAuth(replay.Txkr, 0, auth));
        Assert.False(EmptyData.VerifyAuth(replay.Txki, 0, auth));
        Assert.False(EmptyData.VerifyAuth(replay.Txkr, 1, auth));
        auth[0] ^= 1;
        Assert.False(EmptyData.VerifyAuth(replay.Txkr, 0, auth));
    }
}
