using Modular.Abstractions.WireGuard;

namespace Modular.Control.Relay;

/// <summary>
/// The relay's UDP wire format. Every datagram starts with a one-byte type.
/// Bind (client → relay): type || own key (32) || remote key (32) || token (<see cref="RelayToken.Size"/>);
/// sent first and then periodically as a keepalive. Bound (relay → client): type || status.
/// Data (both ways): type || payload; the relay forwards it only between two sources that bound to each other.
/// </summary>
public static class RelayProtocol
{
    public const byte Bind = 1;
    public const byte Bound = 2;
    public const byte Data = 3;

    public const int HeaderSize = 1;
    public const int BindSize = 1 + WgKey.Size + WgKey.Size + RelayToken.Size;
    public const int BoundSize = 2;

    /// <summary>Largest datagram the relay carries (header included): room for WireGuard over jumbo frames.</summary>
    public const int MaxDatagram = 9216;

    public enum BindStatus : byte
    {
        /// <summary>Authenticated; the remote peer has not bound to us yet.</summary>
        Waiting = 0,

        /// <summary>Both sides bound: data flows.</summary>
        Paired = 1,

        /// <summary>Bad or expired token.</summary>
        Rejected = 2,

        /// <summary>The relay is at its session limit.</summary>
        Full = 3,
    }

    public static void WriteBind(Span<byte> destination, WgKey own, WgKey remote, ReadOnlySpan<byte> token)
    {
        destination[0] = Bind;
        own.CopyTo(destination[1..]);
        remote.CopyTo(destination[(1 + WgKey.Size)..]);
        token.CopyTo(destination[(1 + (2 * WgKey.Size))..]);
    }
}
