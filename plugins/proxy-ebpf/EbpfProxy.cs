using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;
using Modular.Plugins.ProxyUdp;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// Joins one relayed connection to kernel-mode WireGuard through the <see cref="EbpfDataPath"/>: WireGuard is told the
/// peer is at 127.0.0.1:&lt;its own port&gt;; datagrams from the relay leave the one proxy socket for that port and the
/// tc program hands them to WireGuard from there, and whatever WireGuard sends to that port the program turns into a
/// datagram to the proxy socket, which hands it to this proxy. The lifecycle is <see cref="RelayedProxy"/>'s; the
/// data path is leased from the factory for the proxy's life (the last proxy gone detaches the program).
/// </summary>
public sealed class EbpfProxy : RelayedProxy
{
    private readonly EbpfDataPath _path;
    private readonly IDisposable _lease;
    private SocketAddress? _peerAddress;
    private ushort _registered;
    private volatile SpoofingSender? _redirect;
    private long _droppedToWireGuard;

    internal EbpfProxy(EbpfDataPath path, IDisposable lease, ILogger logger)
        : base(logger)
    {
        _path = path;
        _lease = lease;
    }

    public override string Kind => "ebpf";

    /// <summary>Datagrams from the relay that could not be handed to WireGuard (e.g. a full socket buffer).</summary>
    public long DroppedToWireGuard => Interlocked.Read(ref _droppedToWireGuard);

    protected override IPEndPoint AttachToWireGuard()
    {
        var endpoint = _path.Register(this);
        _peerAddress = endpoint.Serialize();
        _registered = (ushort)endpoint.Port;
        return endpoint;
    }

    protected override void DetachFromWireGuard()
    {
        if (_registered != 0)
        {
            _path.Unregister(_registered);
        }
    }

    /// <summary>As the UDP proxy: a raw socket sends as <paramref name="endpoint"/> (needs CAP_NET_RAW, IPv4).</summary>
    protected override void ApplyRedirect(IPEndPoint endpoint)
    {
        SpoofingSender? next = null;
        if (!endpoint.Equals(EndpointAddr))
        {
            try
            {
                next = SpoofingSender.Create(endpoint, _path.WireGuardPort);
                Logger.LogDebug("eBPF proxy for {Peer}: sending as {Endpoint} to WireGuard at {Destination}", RemotePeer.ToShortString(), endpoint, next.Destination);
            }
            catch (Exception ex) when (ex is SocketException or NotSupportedException)
            {
                Logger.LogWarning("eBPF proxy for {Peer} cannot send as {Endpoint} ({Reason}); WireGuard will see {Own} instead",
                    RemotePeer.ToShortString(), endpoint, ex.Message, EndpointAddr);
            }
        }

        Interlocked.Exchange(ref _redirect, next)?.Dispose();
        if (IsClosed)
        {
            Interlocked.Exchange(ref _redirect, null)?.Dispose();
        }
    }

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
                _path.Send(_peerAddress!, datagram.Span);
            }
        }
        catch (SocketException)
        {
            Interlocked.Increment(ref _droppedToWireGuard);
        }
        catch (ObjectDisposedException)
        {
            // The data path closed under a stopping proxy.
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>WireGuard's datagrams arrive through the data path's loop (<see cref="ForwardFromWireGuardAsync"/>); this only waits.</summary>
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

    protected override void OnLoopsStopped()
    {
        Interlocked.Exchange(ref _redirect, null)?.Dispose();
        _lease.Dispose();
    }

    /// <summary>Sends one datagram WireGuard addressed to this peer over the relay; called by the data path's loop.</summary>
    internal async ValueTask ForwardFromWireGuardAsync(ReadOnlyMemory<byte> datagram)
    {
        if (Connection is { } connection)
        {
            await SendToRelayAsync(connection, datagram, CancellationToken.None);
        }
    }
}
