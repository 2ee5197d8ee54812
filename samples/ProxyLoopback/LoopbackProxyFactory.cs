using System.Composition;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace ProxyLoopback;

/// <summary>
/// A proxy plugin: carries a relayed peer's traffic through a loopback UDP socket that WireGuard uses as the
/// peer's endpoint. Select it with <c>[proxy] kind = "sample-loopback"</c>.
/// </summary>
[Export(typeof(IProxyFactory))]
[PluginName("sample-loopback")]
public sealed class LoopbackProxyFactory : IProxyFactory
{
    /// <inheritdoc/>
    public string Description => "Sample proxy: a loopback UDP socket per relayed peer, connected to WireGuard's listen port.";

    /// <inheritdoc/>
    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment) => ProxyCapability.Yes;

    /// <inheritdoc/>
    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
        => ValueTask.FromResult<IProxy>(new LoopbackProxy(iface.ListenPort, context.LoggerFactory.CreateLogger<LoopbackProxy>()));
}

/// <summary>
/// <see cref="RelayedProxy"/> runs the lifecycle (state checks, the relay-to-WireGuard loop, pause, close);
/// this class only says how datagrams reach WireGuard and come back.
/// </summary>
internal sealed class LoopbackProxy(int wireGuardPort, ILogger logger) : RelayedProxy(logger)
{
    private Socket? _socket;

    public override string Kind => "sample-loopback";

    protected override IPEndPoint AttachToWireGuard()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            socket.Connect(new IPEndPoint(IPAddress.Loopback, wireGuardPort));
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _socket = socket;
        return (IPEndPoint)socket.LocalEndPoint!;
    }

    protected override void DetachFromWireGuard() => _socket?.Dispose();

    // This sample does not spoof sources: WireGuard sees the proxy's own endpoint.
    protected override void ApplyRedirect(IPEndPoint endpoint)
    {
    }

    protected override async ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        try
        {
            await _socket!.SendAsync(datagram, SocketFlags.None, cancellationToken);
        }
        catch (SocketException)
        {
            // WireGuard not listening yet: drop, as a lossy path would.
        }
    }

    protected override async Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        var buffer = new byte[RelayedConnectionPump.MaxDatagram];
        while (!cancellationToken.IsCancellationRequested)
        {
            int received;
            try
            {
                received = await _socket!.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
            {
                continue; // the ICMP error of an earlier send
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            if (!await SendToRelayAsync(connection, buffer.AsMemory(0, received), cancellationToken))
            {
                return;
            }
        }
    }
}
