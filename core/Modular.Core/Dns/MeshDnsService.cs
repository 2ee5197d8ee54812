using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Control.Management;

namespace Modular.Core.MeshDns;

/// <summary>
/// The agent's mesh resolver over its lifetime: the engine calls <see cref="ApplyAsync"/> with every network
/// map. The records are swapped in on each map; the listener starts when the first map with DNS enabled
/// arrives (the overlay address exists only once the interface is up), moves when the address changes, and
/// stops when management turns DNS off or the agent shuts down. A port that cannot be bound is logged and
/// tried again on the next map; it never stops the engine.
/// </summary>
public sealed class MeshDnsService : IAsyncDisposable
{
    private readonly int _port;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly DnsResolver _resolver;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private DnsServer? _server;
    private bool _disposed;

    /// <param name="port">The port on the overlay address (53 unless configured otherwise; 0 picks a free one, for tests).</param>
    public MeshDnsService(int port, ILoggerFactory loggerFactory, TimeProvider time, DnsForwarderOptions? forwarderOptions = null)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _port = port;
        _time = time;
        _logger = loggerFactory.CreateLogger<MeshDnsService>();
        _resolver = new DnsResolver(new DnsForwarder(forwarderOptions, time, _logger), _logger);
    }

    public DnsResolver Resolver => _resolver;

    /// <summary>Where the resolver listens now; null while it does not.</summary>
    public IPEndPoint? Listening => _server?.LocalEndPoint;

    /// <summary>Applies one map: records first (so a new listener answers from this map), then the listener.</summary>
    public async Task ApplyAsync(NetworkMap map, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(map);
        await _lock.WaitAsync(cancellationToken);
        try
        {
            if (_disposed)
            {
                return;
            }

            if (map.Dns is not { Enabled: true })
            {
                _resolver.Records = DnsRecords.Empty;
                await StopListenerAsync("management has DNS turned off");
                return;
            }

            var records = DnsRecords.FromMap(map, _logger);
            _resolver.Records = records;
            var address = OverlayAddress(map);
            if (address is null)
            {
                _logger.LogWarning("DNS: the map has no readable own overlay address ({Address}); not listening", map.PeerConfig?.Address);
                await StopListenerAsync("no overlay address");
                return;
            }

            if (_server is { } running && running.LocalEndPoint.Address.Equals(address))
            {
                return;
            }

            await StopListenerAsync("the overlay address changed");
            try
            {
                _server = DnsServer.Start(_resolver, new IPEndPoint(address, _port), _logger, time: _time);
                _resolver.Forwarder.Self = _server.LocalEndPoint;
                _logger.LogInformation("DNS: answering {Zone} ({Hosts} names) on {Endpoint} (UDP and TCP); {Groups} nameserver group(s)",
                    records.Zone.Length > 0 ? records.Zone : "(no zone)", records.HostCount, _server.LocalEndPoint, records.Groups.Count);
            }
            catch (SocketException e)
            {
                _logger.LogWarning("DNS: cannot listen on {Address} port {Port}: {Problem}; trying again with the next map", address, _port, e.SocketErrorCode);
            }
        }
        finally
        {
            _lock.Release();
        }
    }

    private static IPAddress? OverlayAddress(NetworkMap map)
    {
        var text = map.PeerConfig?.Address ?? "";
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        return IPAddress.TryParse(slash >= 0 ? text.AsSpan(0, slash) : text, out var address) ? address : null;
    }

    private async Task StopListenerAsync(string why)
    {
        if (_server is { } server)
        {
            _server = null;
            _resolver.Forwarder.Self = null;
            await server.DisposeAsync();
            _logger.LogInformation("DNS: stopped listening on {Endpoint} ({Why})", server.LocalEndPoint, why);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync();
        try
        {
            _disposed = true;
            await StopListenerAsync("shutting down");
        }
        finally
        {
            _lock.Release();
        }

        _lock.Dispose();
        _resolver.Forwarder.Dispose();
    }
}
