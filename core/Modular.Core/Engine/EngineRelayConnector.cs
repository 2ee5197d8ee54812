using System.Collections.Concurrent;
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

/// <summary>
/// Relay binding with the latest management-issued credentials, joined to WireGuard by the selected proxy. Fresh
/// credentials (management sends them well before the old ones expire) go to every live relay connection too, so
/// a relayed path outlives the credentials it was bound with.
/// </summary>
internal sealed class EngineRelayConnector(IWgIface iface, WgKey ownKey, ProxySelector proxies, StatusRecorder recorder, ILogger logger) : IRelayConnector
{
    private readonly ConcurrentDictionary<RelayedConnection, string> _live = new();
    private volatile RelayGrant? _grant;

    public sealed record RelayGrant(string Address, RelayCredentials Credentials);

    /// <summary>The proxy selection this connector uses (the engine disposes it when it stops).</summary>
    public ProxySelector Proxies => proxies;

    public RelayGrant? Grant
    {
        get => _grant;
        set => _grant = value;
    }

    /// <summary>
    /// Takes the relay address and credentials management announced (null: no announcement yet, the grant stays) and
    /// hands the credentials to the live connections to that relay.
    /// </summary>
    public void Apply(ServiceAddresses? services)
    {
        if (services is null)
        {
            return;
        }

        var credentials = RelayCredentials.From(services);
        Grant = credentials is null ? null : new RelayGrant(services.RelayAddress, credentials);
        foreach (var (connection, address) in _live)
        {
            if (connection.IsClosed)
            {
                _live.TryRemove(connection, out _);
            }
            else if (credentials is not null && address == services.RelayAddress)
            {
                connection.Refresh(credentials);
            }
        }
    }

    /// <summary>Hands <paramref name="connection"/> (to the relay at <paramref name="address"/>) every later credentials refresh.</summary>
    internal void Track(RelayedConnection connection, string address)
    {
        _live[connection] = address;
        if (_grant is { } newer && newer.Address == address && newer.Credentials.ExpiresUnix > connection.CredentialsExpireUnix)
        {
            connection.Refresh(newer.Credentials); // fresher credentials arrived while binding
        }
    }

    public async Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken)
    {
        var grant = _grant;
        if (grant is null || grant.Address.Length == 0)
        {
            throw new InvalidOperationException("no direct path and the server announced no relay");
        }

        RelayedConnection? connection = null;
        try
        {
            var relay = await ResolveAsync(grant.Address, cancellationToken);
            connection = await RelayClient.ConnectAsync(relay, ownKey, remotePeer, grant.Credentials, cancellationToken);
            Track(connection, grant.Address);

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
