using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Control.Management;
using Modular.Core.Status;

namespace Modular.Core.MeshDns;

/// <summary>
/// The agent's mesh resolver over its lifetime: the engine calls <see cref="ApplyAsync"/> with every network
/// map. The records are swapped in on each map; the listener starts when the first map with DNS enabled
/// arrives (the overlay address exists only once the interface is up), moves when the address changes, and
/// stops when management turns DNS off or the agent shuts down. An address or port that cannot be bound
/// (the address not there yet, port 53 taken) is logged and tried again every <see cref="BindRetryInterval"/>
/// until it works or the map changes; it never stops the engine. <see cref="ListeningChanged"/> tells the
/// engine where the resolver listens, so the firewall opens exactly that.
/// </summary>
public sealed class MeshDnsService : IAsyncDisposable
{
    private readonly int _port;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly DnsResolver _resolver;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly ITimer _retryTimer;
    private DnsServer? _server;
    private IPAddress? _wanted;
    private bool _bindFailureLogged;
    private volatile bool _enabled;
    private bool _disposed;

    /// <param name="port">The port on the overlay address (53 unless configured otherwise; 0 picks a free one, for tests).</param>
    public MeshDnsService(int port, ILoggerFactory loggerFactory, TimeProvider time, DnsForwarderOptions? forwarderOptions = null)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _port = port;
        _time = time;
        _logger = loggerFactory.CreateLogger<MeshDnsService>();
        _resolver = new DnsResolver(new DnsForwarder(forwarderOptions, time, _logger), _logger);
        _retryTimer = time.CreateTimer(_ => _ = RetryBindAsync(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>How often a failed bind is tried again.</summary>
    public static readonly TimeSpan BindRetryInterval = TimeSpan.FromSeconds(5);

    /// <summary>Raised (under the service's lock, so in order) with the new listening endpoint, or null when it stops listening.</summary>
    public event Action<IPEndPoint?>? ListeningChanged;

    public DnsResolver Resolver => _resolver;

    /// <summary>Where the resolver listens now; null while it does not.</summary>
    public IPEndPoint? Listening => _server?.LocalEndPoint;

    /// <summary>
    /// What status shows: read from fields the service already keeps (no lock, no call into a socket), so the
    /// engine can publish it on every map, listener change and statistics tick.
    /// </summary>
    public DnsStatus Status()
    {
        var records = _resolver.Records;
        var listening = _server?.LocalEndPoint;
        return new DnsStatus(
            _enabled && !_disposed,
            listening?.ToString(),
            records.Zone,
            records.HostCount,
            records.Groups.Count,
            _resolver.Queries,
            _resolver.AnsweredFromZone,
            _resolver.Forwarded,
            _resolver.NxDomain,
            _resolver.Refused,
            _resolver.ForwardFailures,
            _resolver.Malformed);
    }

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

            _enabled = map.Dns is { Enabled: true };
            if (!_enabled)
            {
                _resolver.Records = DnsRecords.Empty;
                _wanted = null;
                await StopListenerAsync("management has DNS turned off");
                return;
            }

            var records = DnsRecords.FromMap(map, _logger);
            _resolver.Records = records;
            var address = OverlayAddress(map);
            if (address is null)
            {
                _logger.LogWarning("DNS: the map has no readable own overlay address ({Address}); not listening", map.PeerConfig?.Address);
                _wanted = null;
                await StopListenerAsync("no overlay address");
                return;
            }

            if (_server is { } running && running.LocalEndPoint.Address.Equals(address))
            {
                return;
            }

            await StopListenerAsync("the overlay address changed");
            _wanted = address;
            _bindFailureLogged = false;
            TryStart();
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Binds <see cref="_wanted"/>; on failure arms the retry timer. Called under the lock.</summary>
    private void TryStart()
    {
        if (_wanted is not { } address)
        {
            return;
        }

        try
        {
            _server = DnsServer.Start(_resolver, new IPEndPoint(address, _port), _logger, time: _time);
            _retryTimer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _resolver.Forwarder.Self = _server.LocalEndPoint;
            var records = _resolver.Records;
            _logger.LogInformation("DNS: answering {Zone} ({Hosts} names) on {Endpoint} (UDP and TCP); {Groups} nameserver group(s)",
                records.Zone.Length > 0 ? records.Zone : "(no zone)", records.HostCount, _server.LocalEndPoint, records.Groups.Count);
            ListeningChanged?.Invoke(_server.LocalEndPoint);
        }
        catch (SocketException e)
        {
            if (!_bindFailureLogged)
            {
                _bindFailureLogged = true;
                _logger.LogWarning("DNS: cannot listen on {Address} port {Port}: {Problem}; trying again every {Seconds} s",
                    address, _port, e.SocketErrorCode, (int)BindRetryInterval.TotalSeconds);
            }

            _retryTimer.Change(BindRetryInterval, Timeout.InfiniteTimeSpan);
        }
    }

    private async Task RetryBindAsync()
    {
        try
        {
            await _lock.WaitAsync();
        }
        catch (ObjectDisposedException)
        {
            return;
        }

        try
        {
            if (!_disposed && _server is null)
            {
                TryStart();
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
        _retryTimer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        if (_server is { } server)
        {
            _server = null;
            _resolver.Forwarder.Self = null;
            ListeningChanged?.Invoke(null);
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
            _wanted = null;
            await StopListenerAsync("shutting down");
            await _retryTimer.DisposeAsync();
        }
        finally
        {
            _lock.Release();
        }

        _resolver.Forwarder.Dispose();
    }
}
