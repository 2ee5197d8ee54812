namespace Modular.Core.Firewall;

/// <summary>Which sides of a TCP connection have sent FIN.</summary>
[Flags]
public enum TcpFins : byte
{
    None = 0,
    Original = 1,
    Reply = 2,
}

/// <summary>
/// The TCP state machine of connection tracking, as pure functions of (state, flags, direction) so it can be
/// tested with plain values. Deliberately simpler than Linux conntrack: no sequence-number windows (WireGuard
/// already authenticates every packet to a peer), only what the timeouts need — SYN → SYN-ACK → ACK
/// (Established), FIN from both sides (TimeWait), RST (Closed).
/// </summary>
internal static class TcpStateTracker
{
    /// <summary>A SYN without ACK or RST: the only packet that may open a connection from outside.</summary>
    public static bool IsOpeningSyn(TcpFlags flags) => (flags & (TcpFlags.Syn | TcpFlags.Ack | TcpFlags.Rst)) == TcpFlags.Syn;

    /// <summary>
    /// The state a newly tracked TCP connection starts in. Our own stack picking up a connection mid-stream
    /// (e.g. after the rules changed) is trusted, so a non-SYN opener starts Established.
    /// </summary>
    public static ConnectionState Initial(TcpFlags flags) => IsOpeningSyn(flags) ? ConnectionState.SynSent : ConnectionState.Established;

    /// <summary>
    /// A fresh SYN from the originator on a connection that already closed: a new connection reusing the
    /// ports, to be judged by the rules again rather than passed as part of the old one.
    /// </summary>
    public static bool ReopensClosed(ConnectionState state, TcpFlags flags, bool isReply)
        => !isReply && state is ConnectionState.TimeWait or ConnectionState.Closed && (flags & (TcpFlags.Syn | TcpFlags.Ack)) == TcpFlags.Syn;

    /// <summary>The state after a packet with <paramref name="flags"/> (a reply when <paramref name="isReply"/>), and the FINs seen so far.</summary>
    public static (ConnectionState State, TcpFins Fins) Next(ConnectionState state, TcpFins fins, TcpFlags flags, bool isReply)
    {
        if ((flags & TcpFlags.Rst) != 0)
        {
            return (ConnectionState.Closed, fins);
        }

        if ((flags & TcpFlags.Fin) != 0)
        {
            fins |= isReply ? TcpFins.Reply : TcpFins.Original;
            return (fins == (TcpFins.Original | TcpFins.Reply) ? ConnectionState.TimeWait : ConnectionState.FinWait, fins);
        }

        var next = state switch
        {
            ConnectionState.SynSent when isReply && (flags & (TcpFlags.Syn | TcpFlags.Ack)) == (TcpFlags.Syn | TcpFlags.Ack) => ConnectionState.SynReceived,
            ConnectionState.SynReceived when !isReply && (flags & (TcpFlags.Syn | TcpFlags.Ack)) == TcpFlags.Ack => ConnectionState.Established,
            _ => state,
        };
        return (next, fins);
    }
}
