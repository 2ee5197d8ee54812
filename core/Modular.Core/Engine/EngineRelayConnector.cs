using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Control.Relay;
using Modular.Core.Peers;
using Modular.Core.Status;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>Relay binding with the latest management-issued token, joined to WireGuard by the selected proxy.</summary>
internal sealed class EngineRelayConnector(IWgIface iface, WgKey ownKey, ProxySelector proxies, StatusRecorder recorder, ILogger logger) : IRelayConnector
{
    private volatile RelayGrant? _grant;

    public sealed record RelayGrant(string Address, byte[] Token);

    public RelayGrant? Grant
    {
        get => _grant;
        set => _grant = value;
    }

    /// <summary>Takes the relay address and token management announced; null (no announcement yet) keeps the grant.</summary>
    public void Apply(ServiceAddresses? services)
    {
        if (services is not null)
        {
            Grant = new RelayGrant(services.RelayAddress, services.RelayToken.ToByteArray());
        }
    }

    public async Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken)
    {
        var grant = _grant;
        if (grant is null || grant.Address.Length == 0 || grant.Token.Length != RelayToken.Size)
        {
            throw new InvalidOperationException("no direct path and the server announced no relay");
        }

        RelayedConnection? connection = null;
        try
        {
            var relay = await ResolveAsync(grant.Address, cancellationToken);
            connection = await RelayClient.ConnectAsync(relay, ownKey, remotePeer, grant.Token, cancellationToken);
            recorder.SetRelay(new ServiceStatus(grant.Address, true, null));
            var proxy = await proxies.CreateAsync(iface, cancellationToken);
            try
            {
                await proxy.AddRelayedConnAsync(connection, remotePeer, cancellationToken);
            }
            catch
            {
                await proxy.DisposeAsync();
                throw;
            }

            var paired = connection;
            connection = null; // the proxy owns it now
            return new RelayedPath(proxy, grant.Address, () => paired.IsPaired);
        }
        catch (Exception e) when (e is TimeoutException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            recorder.SetRelay(new ServiceStatus(grant.Address, false, e.Message));
            logger.LogWarning("Relay {Relay}: {Problem}", grant.Address, e.Message);
            throw new InvalidOperationException($"relay {grant.Address}: {e.Message}", e);
        }
        finally
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
        }
    }

    internal static async Task<IPEndPoint> ResolveAsync(string hostPort, CancellationToken cancellationToken)
    {
        if (IPEndPoint.TryParse(hostPort, out var endpoint) && endpoint.Port != 0)
        {
            return endpoint;
        }

        var colon = hostPort.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(hostPort.AsSpan(colon + 1), System.Globalization.CultureInfo.InvariantCulture, out var port))
        {
            throw new InvalidDataException($"not a host:port address: {hostPort}");
        }

        var addresses = await Dns.GetHostAddressesAsync(hostPort[..colon], System.Net.Sockets.AddressFamily.InterNetwork, cancellationToken);
        return addresses.Length > 0 ? new IPEndPoint(addresses[0], port) : throw new InvalidDataException($"{hostPort} does not resolve");
    }
}
