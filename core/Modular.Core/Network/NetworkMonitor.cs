using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Modular.Core.Network;

/// <summary>A change of the host's network that the engine must start again for: the first one seen, and how many the burst held.</summary>
internal sealed record NetworkChange(string Reason, int Events);

/// <summary>
/// Watches the host's links, addresses and routes (<see cref="INetworkEvents"/>) for a change that invalidates what
/// the engine built on: a default route in the main table added, replaced or removed, an address added to or
/// removed from an interface that carries a default route, or that interface going down. It reports one
/// <see cref="NetworkChange"/> and returns; its owner restarts the engine and starts a new monitor.
/// <para>
/// Changes the agent makes itself are ignored, so a restart never causes the next one: anything on the agent's own
/// interfaces (its WireGuard interface and address, the routes through it), routes outside the main table (the
/// agent's routing table and exit-node policy routing), routes that are not default routes, and rules (not
/// subscribed at all). A burst (DHCP renewing, a roaming laptop) is one change: after the first relevant event the
/// monitor waits until none came for <see cref="Quiet"/> (at most <see cref="MaxWait"/> in all).
/// </para>
/// Not thread-safe: one caller of <see cref="WaitForChangeAsync"/> at a time.
/// </summary>
internal sealed class NetworkMonitor
{
    /// <summary>How long a burst must stay quiet before it is reported.</summary>
    public static readonly TimeSpan Quiet = TimeSpan.FromSeconds(2);

    /// <summary>The longest a burst delays its report (a link that flaps for minutes still restarts the engine).</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(10);

    private readonly INetworkEvents _events;
    private readonly IReadOnlySet<string> _ownInterfaces;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    // The default routes in the main table as last reported: (family, device, gateway).
    private readonly HashSet<(AddressFamily Family, string? Interface, IPAddress? Gateway)> _defaults = [];

    public NetworkMonitor(INetworkEvents events, IReadOnlySet<string> ownInterfaces, TimeProvider time, ILogger logger)
    {
        _events = events;
        _ownInterfaces = ownInterfaces;
        _time = time;
        _logger = logger;
        foreach (var route in events.DefaultRoutes)
        {
            if (route.Table == NetworkEvent.MainTable && !IsOwn(route.Interface))
            {
                _defaults.Add((route.Family, route.Interface, route.Address));
            }
        }
    }

    /// <summary>Waits for a relevant change and the rest of its burst; returns the first one and the burst's size.</summary>
    public async Task<NetworkChange> WaitForChangeAsync(CancellationToken cancellationToken)
    {
        string? first = null;
        var count = 0;
        long firstAt = 0;
        long lastAt = 0;
        Task<NetworkEvent>? pending = null;
        while (true)
        {
            if (first is null)
            {
                var e = await _events.ReadAsync(cancellationToken);
                if (Judge(e) is { } reason)
                {
                    _logger.LogDebug("Network change: {Change}; waiting for the burst to settle", reason);
                    first = reason;
                    count = 1;
                    firstAt = lastAt = _time.GetTimestamp();
                }

                continue;
            }

            var left = Min(Quiet - _time.GetElapsedTime(lastAt), MaxWait - _time.GetElapsedTime(firstAt));
            if (left <= TimeSpan.Zero)
            {
                return new NetworkChange(first, count);
            }

            // The timer first, then the read: a reader that blocks has the timer already armed (tests rely on that order).
            using var quiet = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var delay = Task.Delay(left, _time, quiet.Token);
            pending ??= _events.ReadAsync(cancellationToken).AsTask();
            if (await Task.WhenAny(pending, delay) == pending)
            {
                await quiet.CancelAsync();
                var e = await pending;
                pending = null;
                if (Judge(e) is not null)
                {
                    count++;
                    lastAt = _time.GetTimestamp();
                }

                continue;
            }

            cancellationToken.ThrowIfCancellationRequested();

            // The burst is over. A read still pending ends with the caller's token (or the source's disposal).
            return new NetworkChange(first, count);
        }
    }

    /// <summary>Why <paramref name="e"/> needs a restart, or null when it does not; keeps the known default routes current.</summary>
    internal string? Judge(NetworkEvent e)
    {
        if (IsOwn(e.Interface))
        {
            return null;
        }

        switch (e.Kind)
        {
            case NetworkEventKind.Route:
                if (e.Table != NetworkEvent.MainTable || e.PrefixLength != 0)
                {
                    return null;
                }

                var key = (e.Family, e.Interface, e.Address);
                if (e.Removed)
                {
                    return _defaults.Remove(key) ? e.ToString() : null;
                }

                if (_defaults.Contains(key))
                {
                    return null;
                }

                if (e.Replace)
                {
                    _defaults.RemoveWhere(d => d.Family == e.Family);
                }

                _defaults.Add(key);
                return e.ToString();

            case NetworkEventKind.Address:
                if (e.Address is not { } address || IPAddress.IsLoopback(address) || address.IsIPv6LinkLocal || !CarriesDefaultRoute(e.Interface))
                {
                    return null;
                }

                return e.ToString();

            default:
                return (e.Removed || !e.Up) && CarriesDefaultRoute(e.Interface) ? e.ToString() : null;
        }
    }

    private bool IsOwn(string? name) => name is not null && _ownInterfaces.Contains(name);

    private bool CarriesDefaultRoute(string? name) => name is not null && _defaults.Any(d => d.Interface == name);

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
