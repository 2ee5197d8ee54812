using Modular.Server.Store;

namespace Modular.Server.Tests;

/// <summary>
/// Issue 13 item 13: a peer must not take a free DNS name by renaming itself. The label is fixed at registration
/// (hostname, with the collision suffix); a hostname change at login changes only the hostname shown.
/// </summary>
public sealed class DnsLabelTakeoverTests : StoreTestBase
{
    private static PeerMetadata Meta(string host) => new(host, "1.0", "linux", [], [], "");

    [Fact]
    public async Task Dns_label_takeover_a_peer_renaming_itself_to_a_free_name_keeps_its_label()
    {
        var alpha = await Register("alpha");
        var before = await Store.GetNetworkSerialAsync(default);

        var renamed = await Store.UpdatePeerAsync(alpha.PublicKey, Meta("payroll"), default);

        Assert.NotNull(renamed);
        Assert.Equal("payroll", renamed.Hostname);
        Assert.Equal("alpha", renamed.DnsLabel);
        Assert.Equal($"alpha.{new Config.AccountConfig().DnsDomain}", (await MapFor(renamed)).PeerConfig.Fqdn);

        // "payroll" stays free for whoever registers under it.
        var payroll = await Register("payroll");
        Assert.Equal("payroll", payroll.DnsLabel);

        // The hostname shows in other peers' maps: one change, one serial (rate-limited by management, see PeerChurnLimitTests).
        Assert.Equal(before + 2, await Store.GetNetworkSerialAsync(default));
    }

    [Fact]
    public async Task Dns_label_takeover_reregistering_under_another_hostname_keeps_the_label()
    {
        var alpha = await Register("alpha");
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("again", true, 0, null), default);

        var again = await Store.RegisterPeerAsync(plain, alpha.PublicKey, Meta("payroll"), null, default);

        Assert.Equal("payroll", again.Hostname);
        Assert.Equal("alpha", again.DnsLabel);
    }

    [Fact]
    public async Task Dns_label_takeover_an_operator_renames_with_peers_rename_and_cannot_take_a_held_label()
    {
        var alpha = await Register("alpha");
        await Register("bravo");
        var before = await Store.GetNetworkSerialAsync(default);

        var renamed = await Store.RenamePeerAsync("alpha", "Payroll", default);
        Assert.Equal("payroll", renamed.DnsLabel);
        Assert.Equal("alpha", renamed.Hostname);
        Assert.Equal(before + 1, await Store.GetNetworkSerialAsync(default));
        Assert.Equal(alpha.Id, (await Store.RenamePeerAsync("payroll.modular.internal", "payroll", default)).Id);
        Assert.Equal(before + 1, await Store.GetNetworkSerialAsync(default));

        var held = await Assert.ThrowsAsync<NameInUseException>(() => Store.RenamePeerAsync("payroll", "bravo", default));
        Assert.Contains("'bravo'", held.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => Store.RenamePeerAsync("payroll", "not a label", default));
        await Assert.ThrowsAsync<ArgumentException>(() => Store.RenamePeerAsync("payroll", "-edge", default));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => Store.RenamePeerAsync("nobody", "x", default));
        Assert.Equal(before + 1, await Store.GetNetworkSerialAsync(default));
    }
}
