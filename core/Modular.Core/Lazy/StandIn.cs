using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>One watched peer: its key and the stand-in WireGuard sends to while it is idle.</summary>
internal class StandIn(WgKey peer, uint address, int port)
{
    // 1 once a listener failure for this peer was logged: the listener may throw on every retry.
    private int _failureLogged;
    private volatile bool _active = true;

    public WgKey Peer { get; } = peer;

    /// <summary>127.128.0.0/9 address in host byte order.</summary>
    public uint Address { get; } = address;

    // Kept as numbers, not an IPEndPoint: that would add about 70 bytes to every idle peer for a value
    // WireGuard's configuration already holds.
    public int Port { get; } = port;

    public IPEndPoint ToEndPoint() => new(StandInAddressPool.ToIPAddress(Address), Port);

    /// <summary>False once unwatched: a datagram WireGuard was already sending then is dropped, not reported.</summary>
    public bool Active => _active;

    public void Deactivate() => _active = false;

    public bool FirstFailure() => Interlocked.Exchange(ref _failureLogged, 1) == 0;
}
