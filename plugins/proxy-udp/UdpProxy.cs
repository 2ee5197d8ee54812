using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// Joins one relayed connection to WireGuard through the <see cref="SharedProxySocket"/>: WireGuard is told the
/// peer's own loopback address on the shared socket's port (<see cref="RelayedProxy.EndpointAddr"/>) is the peer's
/// endpoint; datagrams from the relay are sent to WireGuard's listen port from that address, and whatever WireGuard
/// sends to it the shared socket hands to this proxy, which sends it over the relay. The lifecycle is
/// <see cref="RelayedProxy"/>'s.
/// </summary>
public sealed class UdpProxy : RelayedProxy
{
    private readonly SharedProxySocket _shared;
    private PktInfoMessage? _message;
    private IPEndPoint? _registered;
    private volatile SpoofingSender? _redirect;
    private long _droppedToWireGuard;

    /// <summary>A proxy on <paramref name="shared"/>, the socket every relayed peer of this WireGuard uses.</summary>
    public UdpProxy(SharedProxySocket shared, ILogger logger)
        : base(logger)
    {
        ArgumentNullException.ThrowIfNull(shared);
        _shared = shared;
    }

    /// <summary>A proxy with a shared socket of its own (tests, one-off use); it closes with the proxy.</summary>
    /// <param name="wireGuardPort">The UDP port WireGuard listens on (on 127.0.0.1).</param>
    public UdpProxy(int wireGuardPort, ILogger logger)
        : this(new SharedProxySocket(wireGuardPort, logger), logger)
    {
    }

    public override string Kind => "udp";

    /// <summary>The shared socket this proxy uses.</summary>
    public SharedProxySocket Shared => _shared;

    /// <summary>Datagrams from the relay that could not be handed to WireGuard (e.g. a full socket buffer).</summary>
    public long DroppedToWireGuard => Interlocked.Read(ref _droppedToWireGuard);

    protected override IPEndPoint AttachToWireGuard()
    {
        var endpoint = _shared.Register(this);
        _message = new PktInfoMessage(endpoint, _shared.WireGuardPort);
        _registered = endpoint;
        return endpoint;
    }

    protected override void DetachFromWireGuard()
    {
        if (_registered is { } endpoint)
        {
            _shared.Unregister(endpoint);
        }
    }

    /// <summary>
    /// From now on datagrams from the relay reach WireGuard with <paramref name="endpoint"/> as
    /// their source, so switching from a direct path to the relay is not a roam. That needs a
    /// raw socket (root or CAP_NET_RAW) and an IPv4 endpoint; otherwise it is logged and the
    /// proxy keeps sending from <see cref="RelayedProxy.EndpointAddr"/>. Passing that endpoint
    /// returns to the normal path.
    /// </summary>
    protected override void ApplyRedirect(IPEndPoint endpoint)
    {
        SpoofingSender? next = null;
        if (!endpoint.Equals(EndpointAddr))
        {
            try
            {
                next = SpoofingSender.Create(endpoint, _shared.WireGuardPort);
                Logger.LogDebug("UDP proxy for {Peer}: sending as {Endpoint} to WireGuard at {Destination}", RemotePeer.ToShortString(), endpoint, next.Destination);
            }
            catch (Exception ex) when (ex is SocketException or NotSupportedException)
            {
                Logger.LogWarning("UDP proxy for {Peer} cannot send as {Endpoint} ({Reason}); WireGuard will see {Own} instead",
                    RemotePeer.ToShortString(), endpoint, ex.Message, EndpointAddr);
            }
        }

        Interlocked.Exchange(ref _redirect, next)?.Dispose();
        if (IsClosed)
        {
            // A close that ran meanwhile has already released its sender; do not leak this one.
            Interlocked.Exchange(ref _redirect, null)?.Dispose();
        }
    }

    // sendmsg on a non-blocking datagram socket: it completes (or fails) at once.
    protected override ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        try
        {
            if (_redirect is { } redirect)
            {
                redirect.Send(datagram.Span);
            }
            else
            {
                _shared.SendToWireGuard(_message!, datagram);
            }
        }
        catch (SocketException)
        {
            // A full buffer or WireGuard gone: drop like a lossy path would.
            Interlocked.Increment(ref _droppedToWireGuard);
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// WireGuard's datagrams reach this proxy through <see cref="ForwardFromWireGuardAsync"/> (the shared socket's
    /// loop), so this loop has nothing to do but wait for the proxy to stop.
    /// </summary>
    protected override async Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    protected override void OnLoopsStopped() => Interlocked.Exchange(ref _redirect, null)?.Dispose();

    /// <summary>
    /// Sends one datagram WireGuard addressed to this peer over the relay; called by the shared socket's loop. It
    /// flows from <see cref="RelayedProxy.AddRelayedConnAsync"/> on (also while paused, as with any proxy) and is
    /// dropped once the proxy closes. The datagram is only read during the call.
    /// </summary>
    internal async ValueTask ForwardFromWireGuardAsync(ReadOnlyMemory<byte> datagram)
    {
        if (Connection is { } connection)
        {
            await SendToRelayAsync(connection, datagram, CancellationToken.None);
        }
    }
}
