using Modular.Plugins.Rosenpass.Protocol;
using static Modular.Rosenpass.Tests.RosenpassVectors;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Replays the symmetric side of the vectors' handshake (peer a initiates, peer b responds) with
/// the recorded KEM outputs injected, as the specification orders the steps, and records the
/// chaining key after each step and every value the vectors list. Steps and names follow
/// upstream (IHI = InitHello on the initiator, RHR = RespHello on the responder, ...).
/// </summary>
internal sealed class HandshakeReplay
{
    public HandshakeReplay(ProtocolVersion version)
    {
        var inputs = Inputs;
        Spki = inputs.Bytes("peer_a_pk");
        Spkr = inputs.Bytes("peer_b_pk");
        Psk = inputs.Bytes("psk");
        Sidi = inputs.Bytes("sidi");
        Sidr = inputs.Bytes("sidr");
        Epki = inputs.Bytes("epki");
        var ihi5Shk = inputs.Bytes("IHI5 shk");
        Sctr = inputs.Bytes("IHI5 sctr");
        var rhr4Shk = inputs.Bytes("RHR4 shk");
        Ecti = inputs.Bytes("RHR4 ecti");
        var rhr5Shk = inputs.Bytes("RHR5 shk");
        Scti = inputs.Bytes("RHR5 scti");
        BiscuitKey = inputs.Bytes("biscuit_key");
        var biscuitNonce = inputs.Bytes("biscuit nonce as drawn");
        var biscuitNumber = inputs.Bytes("biscuit_no");
        var labels = Labels.For(version);

        // InitHello, initiator side.
        var ck = ChainingKey.Init(version, Spkr);
        Record(ck);                                               // IHI1
        ck.Mix(Sidi).Mix(Epki);
        Record(ck);                                               // IHI4
        ck.MixKem(Spkr, ihi5Shk, Sctr);
        Record(ck);                                               // IHI5
        Pidi = PeerId.Of(version, Spki);
        PidiAeadKey = ck.Extract(labels.HandshakeEncryption);
        PidiCt = ck.EncryptAndMix(Pidi);
        Record(ck);                                               // IHI6
        ck.Mix(Spki).Mix(Psk);
        Record(ck);                                               // IHI7
        InitHelloAeadKey = ck.Extract(labels.HandshakeEncryption);
        InitHelloAuth = ck.EncryptAndMix([]);
        Record(ck);                                               // IHI8

        // RespHello, responder side (its chain equals the initiator's after IHR8).
        ck.Mix(Sidr).Mix(Sidi);
        Record(ck);                                               // RHR3
        ck.MixKem(Epki, rhr4Shk, Ecti);
        Record(ck);                                               // RHR4
        ck.MixKem(Spki, rhr5Shk, Scti);
        Record(ck);                                               // RHR5
        BiscuitPlaintextContents = new BiscuitContents(Pidi, biscuitNumber, ck.Value);
        BiscuitAd = Biscuit.AdditionalData(version, Spkr, Sidi, Sidr);
        BiscuitCt = Biscuit.Seal(version, BiscuitKey, keyIndex: 1, biscuitNonce, BiscuitPlaintextContents, Spkr, Sidi, Sidr);
        ck.Mix(BiscuitCt);
        Record(ck);                                               // RHR6
        RespHelloAuth = ck.EncryptAndMix([]);
        Record(ck);                                               // RHR7

        // InitConf, initiator side.
        ck.Mix(Sidi).Mix(Sidr);
        Record(ck);                                               // ICI3
        InitConfAuth = ck.EncryptAndMix([]);
        Record(ck);                                               // ICI4

        Txki = ck.InitiatorTransmitKey();
        Txkr = ck.ResponderTransmitKey();
        Osk = ck.OutputKey();
    }

    public byte[] Spki { get; }
    public byte[] Spkr { get; }
    public byte[] Psk { get; }
    public byte[] Sidi { get; }
    public byte[] Sidr { get; }
    public byte[] Epki { get; }
    public byte[] Sctr { get; }
    public byte[] Ecti { get; }
    public byte[] Scti { get; }
    public byte[] BiscuitKey { get; }
    public byte[] Pidi { get; }
    public byte[] PidiAeadKey { get; }
    public byte[] PidiCt { get; }
    public byte[] InitHelloAeadKey { get; }
    public byte[] InitHelloAuth { get; }
    public BiscuitContents BiscuitPlaintextContents { get; }
    public byte[] BiscuitAd { get; }
    public byte[] BiscuitCt { get; }
    public byte[] RespHelloAuth { get; }
    public byte[] InitConfAuth { get; }
    public byte[] Txki { get; }
    public byte[] Txkr { get; }
    public byte[] Osk { get; }

    /// <summary>The chaining key after each step, in the vectors' "chain" order.</summary>
    public List<string> ChainAfterStep { get; } = [];

    public byte[] BiscuitPlaintext
    {
        get
        {
            var pt = new byte[Biscuit.PlaintextLength];
            BiscuitPlaintextContents.WriteTo(pt);
            return pt;
        }
    }

    private void Record(ChainingKey ck) => ChainAfterStep.Add(Hex(ck.Value));

    /// <summary>The four datagrams, built from the replayed fields (mac and cookie as upstream writes them).</summary>
    public byte[] InitHello(ProtocolVersion version, byte[] cookieValue) =>
        Seal(version, 0x81, Spkr, cookieValue, Sidi, Epki, Sctr, PidiCt, InitHelloAuth);

    public byte[] RespHello(ProtocolVersion version) =>
        Seal(version, 0x82, Spki, null, Sidr, Sidi, Ecti, Scti, RespHelloAuth, BiscuitCt);

    public byte[] InitConf(ProtocolVersion version, byte[] cookieValue) =>
        Seal(version, 0x83, Spkr, cookieValue, Sidi, Sidr, BiscuitCt, InitConfAuth);

    public byte[] EmptyDataMessage(ProtocolVersion version) =>
        Seal(version, 0x84, Spki, null, Sidi, new byte[8], EmptyData.Auth(Txkr, 0));

    /// <summary>type | 0 0 0 | fields | mac (to <paramref name="recipient"/>) | cookie (or zeros without a cookie value).</summary>
    public static byte[] Seal(ProtocolVersion version, byte type, byte[] recipient, byte[]? cookieValue, params byte[][] fields)
    {
        var message = new byte[Envelope.Overhead + fields.Sum(f => f.Length)];
        message[0] = type;
        var offset = Envelope.HeaderLength;
        foreach (var field in fields)
        {
            field.CopyTo(message, offset);
            offset += field.Length;
        }

        Envelope.WriteMac(version, Envelope.MacKey(version, recipient), message);
        if (cookieValue is not null)
        {
            Envelope.WriteCookie(cookieValue, message);
        }

        return message;
    }
}
