using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

/// <summary>The TCP state machine over plain values.</summary>
public sealed class TcpStateTrackerTests
{
    private const TcpFlags Syn = TcpFlags.Syn;
    private const TcpFlags SynAck = TcpFlags.Syn | TcpFlags.Ack;
    private const TcpFlags Ack = TcpFlags.Ack;
    private const TcpFlags FinAck = TcpFlags.Fin | TcpFlags.Ack;
    private const TcpFlags Rst = TcpFlags.Rst;

    public static TheoryData<ConnectionState, TcpFins, TcpFlags, bool, ConnectionState, TcpFins> Steps => new()
    {
        { ConnectionState.SynSent, TcpFins.None, SynAck, true, ConnectionState.SynReceived, TcpFins.None },
        { ConnectionState.SynSent, TcpFins.None, SynAck, false, ConnectionState.SynSent, TcpFins.None }, // the opener cannot answer itself
        { ConnectionState.SynReceived, TcpFins.None, Ack, false, ConnectionState.Established, TcpFins.None },
        { ConnectionState.SynReceived, TcpFins.None, Ack, true, ConnectionState.SynReceived, TcpFins.None },
        { ConnectionState.Established, TcpFins.None, FinAck, false, ConnectionState.FinWait, TcpFins.Original },
        { ConnectionState.FinWait, TcpFins.Original, FinAck, true, ConnectionState.TimeWait, TcpFins.Original | TcpFins.Reply },
        { ConnectionState.FinWait, TcpFins.Original, FinAck, false, ConnectionState.FinWait, TcpFins.Original }, // a repeated FIN
        { ConnectionState.Established, TcpFins.None, Rst, true, ConnectionState.Closed, TcpFins.None },
        { ConnectionState.FinWait, TcpFins.Reply, Rst | TcpFlags.Fin, false, ConnectionState.Closed, TcpFins.Reply }, // RST wins over FIN
        { ConnectionState.Established, TcpFins.None, Ack, true, ConnectionState.Established, TcpFins.None },
    };

    [Theory]
    [MemberData(nameof(Steps))]
    public void Next_follows_the_handshake_the_close_and_resets(ConnectionState state, TcpFins fins, TcpFlags flags, bool isReply, ConnectionState expected, TcpFins expectedFins)
        => Assert.Equal((expected, expectedFins), TcpStateTracker.Next(state, fins, flags, isReply));

    [Theory]
    [InlineData(Syn, true)]
    [InlineData(SynAck, false)]
    [InlineData(Syn | Rst, false)]
    [InlineData(Ack, false)]
    public void Only_a_bare_SYN_opens(TcpFlags flags, bool opens)
    {
        Assert.Equal(opens, TcpStateTracker.IsOpeningSyn(flags));
        Assert.Equal(opens ? ConnectionState.SynSent : ConnectionState.Established, TcpStateTracker.Initial(flags));
    }

    [Theory]
    [InlineData(ConnectionState.TimeWait, Syn, false, true)]
    [InlineData(ConnectionState.Closed, Syn, false, true)]
    [InlineData(ConnectionState.Closed, Syn, true, false)] // only the originator reopens
    [InlineData(ConnectionState.Established, Syn, false, false)]
    [InlineData(ConnectionState.TimeWait, SynAck, false, false)]
    public void A_fresh_SYN_on_a_closed_connection_reopens_it(ConnectionState state, TcpFlags flags, bool isReply, bool reopens)
        => Assert.Equal(reopens, TcpStateTracker.ReopensClosed(state, flags, isReply));
}
