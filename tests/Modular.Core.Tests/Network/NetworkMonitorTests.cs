using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Core.Network;

namespace Modular.Core.Tests.Network;

/// <summary>
/// The network monitor's filtering and debouncing on an in-memory event source and a fake clock: the agent's own
/// changes never count, a default-route change is one event however long its burst.
/// </summary>
public sealed class NetworkMonitorTests
{
    private const string Own = "mdl0";
    private static readonly NetworkEvent HostDefault = Route("eth0", "192.168.1.1");

    [Fact]
    public async Task The_agents_own_interface_routes_tables_and_addresses_never_count()
    {
        var (events, time, monitor) = Create();
        using var _ = events;
        var change = monitor.WaitForChangeAsync(CancellationToken.None);

        events.Publish(
            new NetworkEvent(NetworkEventKind.Link, Removed: false, Own, Up: true),
            new NetworkEvent(NetworkEventKind.Address, Removed: false, Own, Address: IPAddress.Parse("100.64.0.5"), PrefixLength: 10),
            Route(Own, null, prefix: 10),
            Route(Own, null),                              // an exit node's default route through the agent's interface
            Route("eth0", "192.168.1.1", table: 7120),    // the agent's own table (exit-node policy routing)
            Route("eth0", null, prefix: 24),              // not a default route
            HostDefault,                                  // the default route it already knew, announced again
            new NetworkEvent(NetworkEventKind.Address, Removed: false, "eth1", Address: IPAddress.Parse("10.9.0.1"), PrefixLength: 24), // no default route there
            new NetworkEvent(NetworkEventKind.Address, Removed: false, "eth0", Address: IPAddress.Parse("fe80::1"), PrefixLength: 64, Family: AddressFamily.InterNetworkV6),
            new NetworkEvent(NetworkEventKind.Link, Removed: true, Own),
            new NetworkEvent(NetworkEventKind.Address, Removed: true, Own, Address: IPAddress.Parse("100.64.0.5"), PrefixLength: 10));
        await events.WaitingAsync();
        time.Advance(TimeSpan.FromMinutes(10));
        await events.WaitingAsync();

        Assert.Equal(11, events.Read);
        Assert.False(change.IsCompleted, "none of the agent's own changes is a network change");
    }

    [Fact]
    public async Task A_default_route_change_is_one_event_after_its_burst_settles()
    {
        var (events, time, monitor) = Create();
        using var _ = events;
        var change = monitor.WaitForChangeAsync(CancellationToken.None);

        // Replaced via another link: one announcement of the new route (the old one goes without a word).
        events.Publish(Route("eth1", "10.0.2.1", replace: true));
        await events.WaitingAsync();
        Assert.False(change.IsCompleted, "it waits for the rest of the burst");

        // More of the same burst: an address on the new link, and the DHCP client touching the route again.
        time.Advance(NetworkMonitor.Quiet / 2);
        events.Publish(new NetworkEvent(NetworkEventKind.Address, Removed: false, "eth1", Address: IPAddress.Parse("10.0.2.7"), PrefixLength: 24));
        await events.WaitingAsync();
        time.Advance(NetworkMonitor.Quiet / 2);
        await events.WaitingAsync();
        Assert.False(change.IsCompleted, "each event of the burst starts the quiet period again");

        time.Advance(NetworkMonitor.Quiet);
        var reported = await change;
        Assert.Equal(2, reported.Events);
        Assert.Contains("default route via 10.0.2.1 dev eth1 added", reported.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_burst_that_never_settles_is_still_reported_after_the_longest_wait()
    {
        var (events, time, monitor) = Create();
        using var _ = events;
        var change = monitor.WaitForChangeAsync(CancellationToken.None);
        var step = NetworkMonitor.Quiet / 2;
        for (var waited = TimeSpan.Zero; !change.IsCompleted; waited += step)
        {
            Assert.True(waited <= NetworkMonitor.MaxWait + step, "reported within the longest wait");
            events.Publish(new NetworkEvent(NetworkEventKind.Link, Removed: false, "eth0", Up: false));
            await Task.WhenAny(change, events.WaitingAsync());
            time.Advance(step);
        }

        // The first "down" started it; every later one was part of the same burst, which never went quiet.
        var reported = await change;
        Assert.Equal("eth0 down", reported.Reason);
        Assert.True(reported.Events > 2, $"{reported.Events} events in the burst");
    }

    [Fact]
    public void An_address_of_the_default_route_interface_or_that_route_going_away_counts()
    {
        var (events, _, monitor) = Create();
        using var _ = events;
        Assert.Null(monitor.Judge(new NetworkEvent(NetworkEventKind.Address, Removed: true, "eth1", Address: IPAddress.Parse("10.9.0.1"), PrefixLength: 24)));
        Assert.Equal(
            "address 192.168.1.20/24 removed from eth0",
            monitor.Judge(new NetworkEvent(NetworkEventKind.Address, Removed: true, "eth0", Address: IPAddress.Parse("192.168.1.20"), PrefixLength: 24)));
        Assert.Null(monitor.Judge(Route("eth0", "192.168.1.99") with { Removed = true }));
        Assert.Equal("default route via 192.168.1.1 dev eth0 removed", monitor.Judge(HostDefault with { Removed = true }));

        // Gone: its interface carries no default route any more, so its addresses stop counting.
        Assert.Null(monitor.Judge(new NetworkEvent(NetworkEventKind.Address, Removed: true, "eth0", Address: IPAddress.Parse("192.168.1.20"), PrefixLength: 24)));
        Assert.NotNull(monitor.Judge(HostDefault));
    }

    [Fact]
    public async Task Cancelling_ends_the_wait_even_in_the_middle_of_a_burst()
    {
        var (events, _, monitor) = Create();
        using var _ = events;
        using var stop = new CancellationTokenSource();
        var change = monitor.WaitForChangeAsync(stop.Token);
        events.Publish(HostDefault with { Removed = true });
        await events.WaitingAsync();
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => change);
    }

    private static (InMemoryNetworkEvents Events, FakeTimeProvider Time, NetworkMonitor Monitor) Create()
    {
        var events = new InMemoryNetworkEvents(HostDefault);
        var time = new FakeTimeProvider();
        return (events, time, new NetworkMonitor(events, new HashSet<string>(StringComparer.Ordinal) { Own }, time, NullLogger.Instance));
    }

    private static NetworkEvent Route(string device, string? gateway, int prefix = 0, int table = NetworkEvent.MainTable, bool replace = false)
        => new(NetworkEventKind.Route, Removed: false, device, Address: gateway is null ? null : IPAddress.Parse(gateway), PrefixLength: prefix, Table: table, Replace: replace);
}
