using System.Net;

namespace Modular.Core.Ice;

/// <summary>
/// Sends and receives the ICE layer's STUN-format datagrams on the path WireGuard's traffic takes.
/// In userspace mode that is WireGuard's own UDP port (<see cref="IceDemuxBind"/>); in kernel mode a
/// socket of its own (<see cref="IceSocketTransport"/>).
/// </summary>
public interface IIceTransport
{
    /// <summary>The local UDP port checks leave from (what host candidates advertise).</summary>
    int LocalPort { get; }

    /// <summary>Sends one datagram; never throws for a network error (a lost check is like a lost packet).</summary>
    void Send(ReadOnlySpan<byte> datagram, IPEndPoint to);

    /// <summary>Where arriving STUN-format datagrams go.</summary>
    void SetReceiver(IStunReceiver receiver);
}

/// <summary>Receives STUN-format datagrams. Called on a receive thread: must not block.</summary>
public interface IStunReceiver
{
    void OnStun(ReadOnlySpan<byte> datagram, IPEndPoint from);
}
