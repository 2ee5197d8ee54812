using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>
/// Hands datagrams of watched peers to the <see cref="IActivityListener"/> and counts what was reported and
/// dropped. The listener runs on WireGuard's send path (userspace) or the monitor's receive loop (kernel): an
/// exception it throws is caught here and logged once per watched peer, so it can break neither.
/// </summary>
internal sealed class ActivityReporter(IActivityListener listener, ILogger logger)
{
    private long _reported;
    private long _dropped;
    private long _listenerFailures;

    public long Reported => Interlocked.Read(ref _reported);

    public long Dropped => Interlocked.Read(ref _dropped);

    public long ListenerFailures => Interlocked.Read(ref _listenerFailures);

    public void Report(StandIn standIn, ReadOnlySpan<byte> datagram)
    {
        if (!standIn.Active)
        {
            Drop();
            return;
        }

        Interlocked.Increment(ref _reported);
        try
        {
            listener.OnPeerActivity(standIn.Peer, datagram);
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _listenerFailures);
            if (standIn.FirstFailure())
            {
                logger.LogError(e, "Lazy: the activity listener failed for peer {Peer}; its datagram was dropped (logged once per watch)", standIn.Peer.ToShortString());
            }
        }
    }

    public void Drop() => Interlocked.Increment(ref _dropped);
}
