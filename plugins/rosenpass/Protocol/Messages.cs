using System.Buffers.Binary;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>The first byte of every Rosenpass datagram (upstream's MsgType; 0x85 "Data" exists only in the whitepaper).</summary>
public enum MessageType : byte
{
    InitHello = 0x81,
    RespHello = 0x82,
    InitConf = 0x83,
    EmptyData = 0x84,
    CookieReply = 0x86,
}

/// <summary>
/// The wire layouts of upstream's msgs.rs. Every handshake message is an envelope
/// type(1) | reserved(3) | payload | mac(16) | cookie(16) (see <see cref="Envelope"/>); CookieReply
/// has no envelope. Lengths are exact: a message of its type with any other length is rejected.
/// </summary>
internal static class Wire
{
    public const int SessionIdLength = Biscuit.SessionIdLength;
    public const int AuthLength = Aead.TagLength;
    public const int PidiCtLength = PeerId.Length + Aead.TagLength;

    public const int InitHelloLength = Envelope.Overhead + SessionIdLength + MlKem512.PublicKeySize + McElieceKem.CiphertextSize + PidiCtLength + AuthLength;
    public const int RespHelloLength = Envelope.Overhead + (2 * SessionIdLength) + MlKem512.CiphertextSize + McElieceKem.CiphertextSize + AuthLength + Biscuit.SealedLength;
    public const int InitConfLength = Envelope.Overhead + (2 * SessionIdLength) + Biscuit.SealedLength + AuthLength;
    public const int EmptyDataLength = Envelope.Overhead + SessionIdLength + sizeof(ulong) + AuthLength;
    public const int CookieReplyLength = Envelope.HeaderLength + SessionIdLength + CookieReply.EncryptedLength + CookieReplyPadding;

    /// <summary>CookieReply is padded to InitHello's length, so answering costs no amplification.</summary>
    public const int CookieReplyPadding = 996;

    /// <summary>The expected length of a message of <paramref name="type"/>.</summary>
    public static int LengthOf(MessageType type) => type switch
    {
        MessageType.InitHello => InitHelloLength,
        MessageType.RespHello => RespHelloLength,
        MessageType.InitConf => InitConfLength,
        MessageType.EmptyData => EmptyDataLength,
        MessageType.CookieReply => CookieReplyLength,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown Rosenpass message type."),
    };

    /// <summary>
    /// The type of <paramref name="message"/>, checked against its length. The reserved bytes are
    /// not checked (as upstream): the mac covers them.
    /// </summary>
    public static MessageType ReadType(ReadOnlySpan<byte> message)
    {
        if (message.IsEmpty)
        {
            throw new RosenpassProtocolException(RosenpassError.WrongLength, "Empty Rosenpass message.");
        }

        var type = (MessageType)message[0];
        if (!Enum.IsDefined(type))
        {
            throw new RosenpassProtocolException(RosenpassError.UnknownMessageType, $"Unknown Rosenpass message type 0x{message[0]:x2}.");
        }

        if (message.Length != LengthOf(type))
        {
            throw new RosenpassProtocolException(RosenpassError.WrongLength, $"A {type} is {LengthOf(type)} bytes, got {message.Length}.");
        }

        return type;
    }

    /// <summary>Checks that <paramref name="message"/> is a well-formed <paramref name="expected"/>.</summary>
    public static void Expect(ReadOnlySpan<byte> message, MessageType expected)
    {
        var type = ReadType(message);
        if (type != expected)
        {
            throw new RosenpassProtocolException(RosenpassError.UnexpectedMessage, $"Expected a {expected}, got a {type}.");
        }
    }

    /// <summary>The mac field of an envelope.</summary>
    public static ReadOnlySpan<byte> MacOf(ReadOnlySpan<byte> message) =>
        message.Slice(message.Length - Envelope.MacLength - Envelope.CookieLength, Envelope.MacLength);

    /// <summary>Writes type | 0 0 0 | fields into <paramref name="output"/> and zeroes mac and cookie; returns the envelope length.</summary>
    public static int WriteEnvelope(MessageType type, Span<byte> output, params byte[][] fields)
    {
        var length = LengthOf(type);
        if (output.Length < length)
        {
            throw new ArgumentException($"A {type} needs a {length}-byte buffer.", nameof(output));
        }

        var message = output[..length];
        message.Clear();
        message[0] = (byte)type;
        var offset = Envelope.HeaderLength;
        foreach (var field in fields)
        {
            field.CopyTo(message[offset..]);
            offset += field.Length;
        }

        if (offset != length - Envelope.MacLength - Envelope.CookieLength)
        {
            throw new InvalidOperationException($"The fields of a {type} do not add up to its layout.");
        }

        return length;
    }

    /// <summary>Reads consecutive payload fields of the given lengths (after the 4-byte header).</summary>
    public static byte[][] ReadFields(ReadOnlySpan<byte> message, params int[] lengths)
    {
        var fields = new byte[lengths.Length][];
        var offset = Envelope.HeaderLength;
        for (var i = 0; i < lengths.Length; i++)
        {
            fields[i] = message.Slice(offset, lengths[i]).ToArray();
            offset += lengths[i];
        }

        return fields;
    }
}

/// <summary>InitHello (0x81): sidi(4) epki(800) sctr(156) pidi_ct(48) auth(16); 1060 bytes with the envelope.</summary>
internal sealed record InitHelloMessage(byte[] Sidi, byte[] Epki, byte[] Sctr, byte[] PidiCt, byte[] Auth)
{
    public static InitHelloMessage Parse(ReadOnlySpan<byte> message)
    {
        Wire.Expect(message, MessageType.InitHello);
        var f = Wire.ReadFields(message, Wire.SessionIdLength, MlKem512.PublicKeySize, McElieceKem.CiphertextSize, Wire.PidiCtLength, Wire.AuthLength);
        return new InitHelloMessage(f[0], f[1], f[2], f[3], f[4]);
    }

    public int WriteTo(Span<byte> output) => Wire.WriteEnvelope(MessageType.InitHello, output, Sidi, Epki, Sctr, PidiCt, Auth);
}

/// <summary>RespHello (0x82): sidr(4) sidi(4) ecti(768) scti(156) auth(16) biscuit(116); 1100 bytes with the envelope.</summary>
internal sealed record RespHelloMessage(byte[] Sidr, byte[] Sidi, byte[] Ecti, byte[] Scti, byte[] Auth, byte[] Biscuit)
{
    public static RespHelloMessage Parse(ReadOnlySpan<byte> message)
    {
        Wire.Expect(message, MessageType.RespHello);
        var f = Wire.ReadFields(message, Wire.SessionIdLength, Wire.SessionIdLength, MlKem512.CiphertextSize, McElieceKem.CiphertextSize, Wire.AuthLength, Protocol.Biscuit.SealedLength);
        return new RespHelloMessage(f[0], f[1], f[2], f[3], f[4], f[5]);
    }

    public int WriteTo(Span<byte> output) => Wire.WriteEnvelope(MessageType.RespHello, output, Sidr, Sidi, Ecti, Scti, Auth, Biscuit);
}

/// <summary>InitConf (0x83): sidi(4) sidr(4) biscuit(116) auth(16); 176 bytes with the envelope.</summary>
internal sealed record InitConfMessage(byte[] Sidi, byte[] Sidr, byte[] Biscuit, byte[] Auth)
{
    public static InitConfMessage Parse(ReadOnlySpan<byte> message)
    {
        Wire.Expect(message, MessageType.InitConf);
        var f = Wire.ReadFields(message, Wire.SessionIdLength, Wire.SessionIdLength, Protocol.Biscuit.SealedLength, Wire.AuthLength);
        return new InitConfMessage(f[0], f[1], f[2], f[3]);
    }

    public int WriteTo(Span<byte> output) => Wire.WriteEnvelope(MessageType.InitConf, output, Sidi, Sidr, Biscuit, Auth);
}

/// <summary>EmptyData (0x84): sid(4, the receiver's session id) ctr(8, u64 LE) auth(16); 64 bytes with the envelope.</summary>
internal sealed record EmptyDataMessage(byte[] Sid, ulong Counter, byte[] Auth)
{
    public static EmptyDataMessage Parse(ReadOnlySpan<byte> message)
    {
        Wire.Expect(message, MessageType.EmptyData);
        var f = Wire.ReadFields(message, Wire.SessionIdLength, sizeof(ulong), Wire.AuthLength);
        return new EmptyDataMessage(f[0], BinaryPrimitives.ReadUInt64LittleEndian(f[1]), f[2]);
    }

    public int WriteTo(Span<byte> output)
    {
        var counter = new byte[sizeof(ulong)];
        BinaryPrimitives.WriteUInt64LittleEndian(counter, Counter);
        return Wire.WriteEnvelope(MessageType.EmptyData, output, Sid, counter, Auth);
    }
}

/// <summary>
/// CookieReply (0x86, no envelope): type(1) reserved(3) sid(4) cookie_encrypted(56) padding(996) = 1060 bytes.
/// sid is the session id of the message it answers (the initiator's sidi).
/// </summary>
internal sealed record CookieReplyMessage(byte[] Sid, byte[] CookieEncrypted)
{
    public static CookieReplyMessage Parse(ReadOnlySpan<byte> message)
    {
        Wire.Expect(message, MessageType.CookieReply);
        var f = Wire.ReadFields(message, Wire.SessionIdLength, CookieReply.EncryptedLength);
        return new CookieReplyMessage(f[0], f[1]);
    }

    /// <summary>Writes the reply; the padding is random (as upstream), so it says nothing.</summary>
    public int WriteTo(Span<byte> output)
    {
        if (output.Length < Wire.CookieReplyLength)
        {
            throw new ArgumentException($"A CookieReply needs a {Wire.CookieReplyLength}-byte buffer.", nameof(output));
        }

        var message = output[..Wire.CookieReplyLength];
        message[..Envelope.HeaderLength].Clear();
        message[0] = (byte)MessageType.CookieReply;
        Sid.CopyTo(message[Envelope.HeaderLength..]);
        CookieEncrypted.CopyTo(message[(Envelope.HeaderLength + Wire.SessionIdLength)..]);
        System.Security.Cryptography.RandomNumberGenerator.Fill(message[(Envelope.HeaderLength + Wire.SessionIdLength + CookieReply.EncryptedLength)..]);
        return Wire.CookieReplyLength;
    }
}
