using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Network;
using Modular.Testing;

namespace Modular.Core.Tests.Network;

/// <summary>
/// The real rtnetlink source in a namespace of its own: it knows the default route it started with, ignores what an
/// agent does to its own interface, routes, table and rules, and reports replacing the default route via another link.
/// </summary>
public sealed class NetlinkNetworkEventsNamespaceTests
{
    [SkippableFact]
    public async Task A_default_route_replaced_via_another_link_is_reported_and_the_agents_own_changes_are_not()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("ip");
        using var host = NetworkNamespace.Create("nmhost");
        using var first = NetworkNamespace.Create("nmgw1");
        using var second = NetworkNamespace.Create("nmgw2");
        host.Link(first, "10.61.0.2/24", "10.61.0.1/24");
        host.Link(second, "10.62.0.2/24", "10.62.0.1/24");
        host.Exec("ip route add default via 10.61.0.1");

        using var events = InNamespace.Create(host.Name, () => new NetlinkNetworkEvents(NullLogger.Instance));
        var known = Assert.Single(events.DefaultRoutes, r => r.Table == NetworkEvent.MainTable);
        Assert.Equal("10.61.0.1", known.Address?.ToString());
        Assert.StartsWith("va", known.Interface, StringComparison.Ordinal);

        var monitor = new NetworkMonitor(events, new HashSet<string>(StringComparer.Ordinal) { "mdlown" }, TimeProvider.System, NullLogger.Instance);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var change = monitor.WaitForChangeAsync(timeout.Token);

        // What an agent does: its interface, address and routes (an exit node's default route among them), its table and rule.
        host.Exec("ip link add mdlown type veth peer name mdlownp"); // no dummy module on every kernel
        host.Exec("ip addr add 100.64.0.9/10 dev mdlown");
        host.Exec("ip link set mdlown up");
        host.Exec("ip route add 10.200.0.0/16 dev mdlown");
        host.Exec("ip route add default dev mdlown table 7120");
        host.Exec("ip route add default dev mdlown metric 5000");
        host.Exec("ip rule add not fwmark 0x1bd00 table 7120 priority 5190");
        host.Exec("ip route add 10.63.0.0/24 via 10.61.0.1"); // not a default route
        host.Exec("ip link del mdlown");

        // The change that counts.
        host.Exec("ip route replace default via 10.62.0.1");
        var reported = await change;
        Assert.StartsWith("default route via 10.62.0.1 dev va", reported.Reason, StringComparison.Ordinal);
        Assert.EndsWith("added", reported.Reason, StringComparison.Ordinal);
    }
}
