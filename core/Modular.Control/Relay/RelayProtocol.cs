using System.Buffers.Binary;
using Modular.Abstractions.WireGuard;

namespace Modular.Control.Relay;

/// <summary>
/// The relay's UDP wire format. Every datagram starts with a one-byte type.
/// Signed Bind (client → relay): type || own key (32) || remote key (32) || expiry (8, big-endian Unix seconds) ||
/// counter (8, big-endian) || MAC (32, see <see cref="RelayToken.SignBind"/>); sent first and then periodically as a
/// keepalive, each with a larger counter. Bind (the old form, accepted for one release): type || own key || remote
/// key || v1 token (<see cref="RelayToken.Size"/>). Bound (relay → client): type || status.
/// Data (both ways): type || payload; the relay forwards it only between two sources that bound to each other.
/// </summary>
public static class RelayProtocol
{
    /// <summary>The old, unsigned Bind (v1 token in clear): replayable; accepted for one release.</summary>
    public const byte Bind = 1;
    public const byte Bound = 2;
    public const byte Data = 3;

    /// <summary>The signed Bind: MAC under the per-token secret plus a counter.</summary>
    public const byte SignedBind = 4;

    public const int HeaderSize = 1;
    public const int BindSize = 1 + WgKey.Size + WgKey.Size + RelayToken.Size;
    public const int SignedBindSize = 1 + WgKey.Size + WgKey.Size + 8 + 8 + RelayToken.MacSize;
    public const int BoundSize = 2;

    /// <summary>Largest datagram the relay carries (header included): room for WireGuard over jumbo frames.</summary>
    public const int MaxDatagram = 9216;

    public enum BindStatus : byte
    {
        /// <summary>Authenticated; the remote peer has not bound to us yet.</summary>
        Waiting = 0,

        /// <summary>Both sides bound: data flows.</summary>
        Paired = 1,

        /// <summary>Bad or expired token, bad MAC, or a replayed counter.</summary>
        Rejected = 2,

        /// <summary>The relay is at its session limit.</summary>
        Full = 3,
    }

    /// <summary>The fields of a signed Bind (the MAC aside).</summary>
    public readonly record struct SignedBindFields(WgKey Own, WgKey Remote, long ExpiresUnix, ulong Counter);

    public static void WriteBind(Span<byte> destination, WgKey own, WgKey remote, ReadOnlySpan<byte> token)
    {
        destination[0] = Bind;
        own.CopyTo(destination[1..]);
        remote.CopyTo(destination[(1 + WgKey.Size)..]);
        token.CopyTo(destination[(1 + (2 * WgKey.Size))..]);
    }

    /// <summary>Writes a signed Bind (<see cref="SignedBindSize"/> bytes) with its MAC under <paramref name="tokenSecret"/>.</summary>
    public static void WriteSignedBind(Span<byte> destination, WgKey own, WgKey remote, long expiresUnix, ulong counter, ReadOnlySpan<byte> tokenSecret)
    {
        destination[0] = SignedBind;
        own.CopyTo(destination[1..]);
        remote.CopyTo(destination[(1 + WgKey.Size)..]);
        BinaryPrimitives.WriteInt64BigEndian(destination[(1 + (2 * WgKey.Size))..], expiresUnix);
        BinaryPrimitives.WriteUInt64BigEndian(destination[(9 + (2 * WgKey.Size))..], counter);
        RelayToken.SignBind(tokenSecret, destination[..(SignedBindSize - RelayToken.MacSize)], destination[(SignedBindSize - RelayToken.MacSize)..SignedBindSize]);
    }

    /// <summary>Reads a signed Bind's fields; the MAC is not checked here (see <see cref="RelayToken.VerifySignedBind"/>).</summary>
    public static SignedBindFields ReadSignedBind(ReadOnlySpan<byte> bind) => new(
        new WgKey(bind.Slice(1, WgKey.Size)),
        new WgKey(bind.Slice(1 + WgKey.Size, WgKey.Size)),
        BinaryPrimitives.ReadInt64BigEndian(bind[(1 + (2 * WgKey.Size))..]),
        BinaryPrimitives.ReadUInt64BigEndian(bind[(9 + (2 * WgKey.Size))..]));
}
