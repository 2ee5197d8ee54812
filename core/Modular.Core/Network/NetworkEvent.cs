namespace Modular.Core.Network;

/// <summary>What an rtnetlink message was about.</summary>
internal enum NetworkEventKind
{
    /// <summary>An interface appeared, changed state or went away (RTM_NEWLINK / RTM_DELLINK).</summary>
    Link,

    /// <summary>An address was added to or removed from an interface (RTM_NEWADDR / RTM_DELADDR).</summary>
    Address,

    /// <summary>A unicast route was added, replaced or removed (RTM_NEWROUTE / RTM_DELROUTE).</summary>
    Route,
}

/// <summary>
/// One change the kernel reported, reduced to what the <see cref="NetworkMonitor"/> decides on.
/// </summary>
/// <param name="Removed">RTM_DEL*: the link, address or route is gone.</param>
/// <param name="Interface">The interface's name (a link's own, an address's, a route's output device); null when unknown.</param>
/// <param name="Up">Links only: administratively up and running.</param>
/// <param name="Address">An address's address, or a route's gateway; null when none.</param>
/// <param name="PrefixLength">An address's prefix, or a route's destination length (0 is a default route).</param>
/// <param name="Table">Routes only: the routing table (254 is main).</param>
/// <param name="Family">IPv4 or IPv6 (a route without a gateway says its family only here).</param>
/// <param name="Replace">Routes only: NLM_F_REPLACE, the route replaced the one to the same destination (which the kernel does not report as removed).</param>
internal sealed record NetworkEvent(
    NetworkEventKind Kind,
    bool Removed,
    string? Interface,
    bool Up = false,
    System.Net.IPAddress? Address = null,
    int PrefixLength = 0,
    int Table = NetworkEvent.MainTable,
    System.Net.Sockets.AddressFamily Family = System.Net.Sockets.AddressFamily.InterNetwork,
    bool Replace = false)
{
    /// <summary>The kernel's main routing table (RT_TABLE_MAIN), where a host's default route lives.</summary>
    public const int MainTable = 254;

    public override string ToString() => Kind switch
    {
        NetworkEventKind.Link => $"{Interface} {(Removed ? "removed" : Up ? "up" : "down")}",
        NetworkEventKind.Address => $"address {Address}/{PrefixLength} {(Removed ? "removed from" : "added to")} {Interface}",
        _ => $"{(PrefixLength == 0 ? "default route" : "route")} via {Address?.ToString() ?? "(no gateway)"} dev {Interface} {(Removed ? "removed" : "added")}",
    };
}

/// <summary>
/// Where the <see cref="NetworkMonitor"/> reads the host's link, address and route changes: rtnetlink on the host
/// (<see cref="NetlinkNetworkEvents"/>), an in-memory queue in unit tests.
/// </summary>
internal interface INetworkEvents : IDisposable
{
    /// <summary>The default routes in force when the source opened (what a later change is compared with).</summary>
    IReadOnlyList<NetworkEvent> DefaultRoutes { get; }

    /// <summary>The next change; waits until one comes or <paramref name="cancellationToken"/> fires.</summary>
    ValueTask<NetworkEvent> ReadAsync(CancellationToken cancellationToken);
}
