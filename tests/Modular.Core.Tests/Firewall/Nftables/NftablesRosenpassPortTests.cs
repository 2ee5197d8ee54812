using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Firewall;
using Modular.Core.Firewall.Nftables;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// Kernel mode opens the Rosenpass exchange's port while a PSK provider runs, whoever turned Rosenpass on (the account
/// too, not only the local flag the table was first rendered with), and closes it when the provider stops.
/// </summary>
public sealed class NftablesRosenpassPortTests
{
    private const string Accept = "udp dport 9999 accept comment \"rosenpass\"";

    [Fact]
    public async Task The_port_opens_and_closes_on_the_table_in_force_and_an_unchanged_port_applies_nothing()
    {
        var nft = new FakeNftables();
        await using var enforcer = new NftablesEnforcer("mdlt0", IPAddress.Parse("100.64.0.1"), new FirewallOptions(), nft, NullLogger.Instance);
        await enforcer.ApplyAsync([], CancellationToken.None);
        Assert.DoesNotContain(Accept, nft.Applied[^1], StringComparison.Ordinal);

        await enforcer.SetRosenpassPortAsync(9999, CancellationToken.None);
        Assert.Equal(2, nft.Applied.Count);
        Assert.Contains(Accept, nft.Applied[^1], StringComparison.Ordinal);

        await enforcer.SetRosenpassPortAsync(9999, CancellationToken.None);
        Assert.Equal(2, nft.Applied.Count);

        await enforcer.SetRosenpassPortAsync(null, CancellationToken.None);
        Assert.Equal(3, nft.Applied.Count);
        Assert.DoesNotContain(Accept, nft.Applied[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_port_set_before_the_first_table_is_in_it()
    {
        var nft = new FakeNftables();
        await using var enforcer = new NftablesEnforcer("mdlt0", IPAddress.Parse("100.64.0.1"), new FirewallOptions(), nft, NullLogger.Instance);

        await enforcer.SetRosenpassPortAsync(9999, CancellationToken.None);
        Assert.Empty(nft.Applied);
        await enforcer.ApplyAsync([], CancellationToken.None);

        Assert.Contains(Accept, Assert.Single(nft.Applied), StringComparison.Ordinal);
    }
}
