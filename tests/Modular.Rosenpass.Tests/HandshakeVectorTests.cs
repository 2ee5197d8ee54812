using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// The full symmetric handshake replayed with the recorded KEM outputs: the official V03 vector
/// (upstream's deterministic handshake) and the computed V02 transcript with the same inputs.
/// Every chaining key, AEAD key, field, live key and the output key (the WireGuard PSK) is asserted.
/// </summary>
public sealed class HandshakeVectorTests
{
    public static TheoryData<ProtocolVersion, string> Versions => new()
    {
        { ProtocolVersion.V03, "V03" },
        { ProtocolVersion.V02, "V02" },
    };

    [Fact]
    public void RecordedInputs_AreTheOfficialOnes()
    {
        Assert.Equal(Inputs.Get("peer_a_pk").GetProperty("sha256").GetString(),
            Hex(System.Security.Cryptography.SHA256.HashData(Inputs.Bytes("peer_a_pk"))));
        Assert.Equal(Inputs.Get("peer_b_pk").GetProperty("sha256").GetString(),
            Hex(System.Security.Cryptography.SHA256.HashData(Inputs.Bytes("peer_b_pk"))));
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void EveryChainingKey_MatchesTheVectors(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var chain = Handshake(vectorName).GetProperty("chain").EnumerateArray().ToList();
        Assert.Equal(chain.Count, replay.ChainAfterStep.Count);
        for (var i = 0; i < chain.Count; i++)
        {
            Assert.True(chain[i].GetProperty("ck_after").GetString() == replay.ChainAfterStep[i],
                $"{version} ck after {chain[i].GetProperty("step").GetString()}");
        }
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void EveryStepValue_MatchesTheVectors(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var chain = Handshake(vectorName).GetProperty("chain");
        Assert.Equal(chain[3].Bytes("pidi"), replay.Pidi);
        Assert.Equal(chain[3].Bytes("aead_key"), replay.PidiAeadKey);
        Assert.Equal(chain[3].Bytes("pidi_ct"), replay.PidiCt);
        Assert.Equal(chain[5].Bytes("aead_key"), replay.InitHelloAeadKey);
        Assert.Equal(chain[5].Bytes("auth"), replay.InitHelloAuth);
        Assert.Equal(chain[9].Bytes("biscuit_pt"), replay.BiscuitPlaintext);
        Assert.Equal(chain[9].Bytes("biscuit_ad"), replay.BiscuitAd);
        Assert.Equal(chain[9].Bytes("biscuit_ct"), replay.BiscuitCt);
        Assert.Equal(chain[10].Bytes("auth"), replay.RespHelloAuth);
        Assert.Equal(chain[12].Bytes("auth"), replay.InitConfAuth);
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void LiveKeysAndTheWireGuardPsk_MatchTheVectors(ProtocolVersion version, string vectorName)
    {
        var replay = new HandshakeReplay(version);
        var live = Handshake(vectorName).GetProperty("live");
        Assert.Equal(live.Bytes("txki_ini_enc"), replay.Txki);
        Assert.Equal(live.Bytes("txkr_res_enc"), replay.Txkr);
        Assert.Equal(live.Bytes("osk_wireguard_psk"), replay.Osk);
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void TheResponderSide_OpensWhatTheInitiatorSent_AndReachesTheSameKeys(ProtocolVersion version, string vectorName)
    {
        _ = vectorName;
        var replay = new HandshakeReplay(version);
        var inputs = Inputs;

        // IHR1..IHR8: the responder rebuilds the chain from InitHello's fields and opens pidi_ct and auth.
        var ck = ChainingKey.Init(version, replay.Spkr).Mix(replay.Sidi).Mix(replay.Epki)
            .MixKem(replay.Spkr, inputs.Bytes("IHI5 shk"), replay.Sctr);
        var pidi = new byte[PeerId.Length];
        Assert.True(ck.TryDecryptAndMix(replay.PidiCt, pidi));
        Assert.Equal(PeerId.Of(version, replay.Spki), pidi);
        ck.Mix(replay.Spki).Mix(replay.Psk);
        Assert.True(ck.TryDecryptAndMix(replay.InitHelloAuth, []));
        Assert.Equal(replay.ChainAfterStep[5], Hex(ck.Value));

        // ICR1: the biscuit from InitConf restores the chain; ICR2 re-derives (and discards) RespHello's auth.
        Assert.Equal(1, Biscuit.KeyIndex(replay.BiscuitCt));
        Assert.True(Biscuit.TryOpen(version, replay.BiscuitKey, replay.BiscuitCt, replay.Spkr, replay.Sidi, replay.Sidr, out var contents));
        Assert.Equal(replay.Pidi, contents!.Pidi);
        Assert.Equal(Inputs.Bytes("biscuit_no"), contents.BiscuitNumber);
        var restored = ChainingKey.Restore(version, contents.ChainingKey).Mix(replay.BiscuitCt);
        Assert.Equal(replay.ChainAfterStep[9], Hex(restored.Value));
        Assert.Equal(replay.RespHelloAuth, restored.EncryptAndMix([]));

        // ICR3/ICR4, then the same live keys and PSK as the initiator.
        restored.Mix(replay.Sidi).Mix(replay.Sidr);
        Assert.True(restored.TryDecryptAndMix(replay.InitConfAuth, []));
        Assert.Equal(replay.Osk, restored.OutputKey());
        Assert.Equal(replay.Txkr, restored.ResponderTransmitKey());
    }

    [Fact]
    public void TheTwoVersions_NeverAgree()
    {
        var v02 = new HandshakeReplay(ProtocolVersion.V02);
        var v03 = new HandshakeReplay(ProtocolVersion.V03);
        Assert.NotEqual(v02.Osk, v03.Osk);
        Assert.NotEqual(v02.PidiCt, v03.PidiCt);
    }
}
