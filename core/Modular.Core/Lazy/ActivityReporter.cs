using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>One watched peer: its key and the stand-in WireGuard sends to while it is idle.</summary>
internal class StandIn(WgKey peer, uint address, IPEndPoint endpoint)
{
    // 1 once a listener failure for this peer was logged: the listener may throw on every retry.
    private int _failureLogged;

    public WgKey Peer { get; } = peer;

    /// <summary>127.128.0.0/9 address in host byte order.</summary>
    public uint Address { get; } = address;

    public IPEndPoint Endpoint { get; } = endpoint;

    private volatile bool _active = true;

    /// <summary>False once unwatched: a datagram WireGuard was already sending then is dropped, not reported.</summary>
    public bool Active => _active;

    public void Deactivate() => _active = false;

    public bool FirstFailure() => Interlocked.Exchange(ref _failureLogged, 1) == 0;
}

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
