namespace Modular.Core.Lazy;

/// <summary>
/// Tells from WireGuard's byte counters how long a connected peer has carried no traffic. The counters also
/// count what WireGuard sends on its own: a 32-byte keepalive each way per keepalive interval and a handshake
/// (148 + 92 bytes) about every two minutes while keepalives keep the session up. So "quiet" means: since the
/// last activity no more bytes moved than those explain. It works the same for kernel, external and in-process
/// WireGuard, which all report only these counters.
/// </summary>
public sealed class InactivityTracker
{
    private const int KeepaliveBytes = 32;
    private const int HandshakeBytes = 148 + 92;
    private static readonly TimeSpan RekeyInterval = TimeSpan.FromMinutes(2);

    private readonly TimeSpan _keepalive;
    private bool _marked;
    private long _rxAtMark;
    private long _txAtMark;
    private long _exemptAtMark;
    private DateTimeOffset _markedAt;

    public InactivityTracker(TimeSpan keepalive) => _keepalive = keepalive > TimeSpan.Zero ? keepalive : TimeSpan.FromSeconds(25);

    /// <summary>Forgets the counters: the next observation starts a new quiet period (a new session counts from zero).</summary>
    public void Reset() => _marked = false;

    /// <summary>Takes one poll of the counters; returns how long the peer has been quiet (zero when it just carried traffic).</summary>
    /// <param name="exemptBytes">
    /// A running total of tunnel bytes that are not activity either (a PSK provider's own exchange with this peer, as
    /// WireGuard counts them): what it grew by since the last activity joins the allowance, as keepalives do.
    /// </param>
    public TimeSpan Observe(long rxBytes, long txBytes, DateTimeOffset now, long exemptBytes = 0)
    {
        if (!_marked || rxBytes < _rxAtMark || txBytes < _txAtMark || now < _markedAt || exemptBytes < _exemptAtMark)
        {
            Mark(rxBytes, txBytes, now, exemptBytes);
            return TimeSpan.Zero;
        }

        var quiet = now - _markedAt;
        if ((rxBytes - _rxAtMark) + (txBytes - _txAtMark) > ControlBytesWithin(quiet) + (exemptBytes - _exemptAtMark))
        {
            Mark(rxBytes, txBytes, now, exemptBytes);
            return TimeSpan.Zero;
        }

        return quiet;
    }

    /// <summary>The most WireGuard moves on its own in <paramref name="period"/>, both directions together.</summary>
    public long ControlBytesWithin(TimeSpan period)
    {
        var keepalives = (long)(period / _keepalive) + 1;
        var handshakes = (long)(period / RekeyInterval) + 1;
        return (2 * KeepaliveBytes * keepalives) + (HandshakeBytes * handshakes);
    }

    private void Mark(long rxBytes, long txBytes, DateTimeOffset now, long exemptBytes)
    {
        (_marked, _rxAtMark, _txAtMark, _markedAt, _exemptAtMark) = (true, rxBytes, txBytes, now, exemptBytes);
    }
}
