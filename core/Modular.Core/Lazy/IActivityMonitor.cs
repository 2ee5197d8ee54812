using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Lazy;

/// <summary>
/// Stands in as the WireGuard endpoint of idle (lazy) peers. WireGuard keeps an idle peer with its allowed IPs
/// and this stand-in as its endpoint, so the first IP packet for the peer is staged inside WireGuard and only the
/// handshake initiation it triggers reaches the stand-in; that datagram is reported to the
/// <see cref="Abstractions.Activity.IActivityListener"/> given at construction and goes no further.
/// Userspace mode claims a virtual endpoint on the Bind hook (no socket: <see cref="BindHookActivityMonitor"/>);
/// kernel or external WireGuard sends to a loopback address of 127.128.0.0/9 that one socket of the monitor receives
/// for every peer (<see cref="LoopbackActivityMonitor"/>). Either way an idle peer costs no socket and a few hundred
/// bytes. Watch and Unwatch may be called from any thread, also while datagrams are being reported. Disposing
/// stops all watching (the loopback monitor closes its socket); Watch then throws <see cref="ObjectDisposedException"/>.
/// </summary>
public interface IActivityMonitor : IAsyncDisposable
{
    /// <summary>
    /// Starts watching <paramref name="peer"/> and returns the endpoint WireGuard must use for it while it is idle.
    /// Watching a watched peer returns the same endpoint. Every datagram WireGuard sends there is reported (retries
    /// too, about every 5 s); the listener decides what a repeat means.
    /// </summary>
    IPEndPoint Watch(WgKey peer);

    /// <summary>
    /// Stops watching; datagrams to the peer's stand-in are dropped from then on (and its address is reused for
    /// another peer later, oldest freed first). Unknown peers are ignored. Point WireGuard at the peer's real
    /// endpoint before unwatching, so no retry is sent to a stand-in nobody watches.
    /// </summary>
    void Unwatch(WgKey peer);

    /// <summary>How many peers are watched now.</summary>
    int Count { get; }
}
