namespace Modular.Testing;

/// <summary>
/// Datagrams framed as WireGuard messages, for tests that push data through a relay proxy: the proxies hand on only
/// what is framed as WireGuard (RelayedConnectionPump.Classify) and drop the rest as malformed.
/// </summary>
public static class WgFrames
{
    /// <summary>A transport-data message (type 4, 32 bytes of header and tag) carrying <paramref name="marker"/> after its type.</summary>
    public static byte[] Transport(params byte[] marker)
    {
        var frame = new byte[32 + marker.Length];
        frame[0] = 4;
        marker.CopyTo(frame.AsSpan(4));
        return frame;
    }

    /// <summary>Makes <paramref name="datagram"/> (at least 32 bytes, any content) a transport-data message in place and returns it.</summary>
    public static byte[] AsTransport(byte[] datagram)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(datagram.Length, 32);
        datagram[0] = 4;
        datagram[1] = datagram[2] = datagram[3] = 0;
        return datagram;
    }
}
