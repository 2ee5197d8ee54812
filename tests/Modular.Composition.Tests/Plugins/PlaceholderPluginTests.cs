using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.Rosenpass;

namespace Modular.Composition.Tests.Plugins;

public sealed class PlaceholderPluginTests
{
    [Fact]
    public async Task Rosenpass_provider_refuses_peers_without_Rosenpass_when_strict_and_gives_permissive_ones_the_account_psk()
    {
        // The placeholder that allowed every peer is gone: the provider applies the precedence
        // (RosenpassProviderTests covers the whole matrix; RealExchangeTests the exchange itself).
        var factory = new RosenpassProviderFactory();
        Assert.StartsWith("Rosenpass PSKs", factory.Description, StringComparison.Ordinal);
        await using var provider = await factory.CreateAsync(new FakePluginContext(), CancellationToken.None);
        var account = new WgKey(Enumerable.Repeat((byte)5, 32).ToArray());
        var strict = await provider.GetPresharedKeyAsync(new PskPeer(new WgKey(new byte[32]), "peer1", null, null) { AccountPresharedKey = account }, CancellationToken.None);
        var permissive = await provider.GetPresharedKeyAsync(new PskPeer(new WgKey(new byte[32]), "peer1", null, null) { AccountPresharedKey = account, Permissive = true }, CancellationToken.None);
        Assert.False(strict.Allowed);
        Assert.True(permissive.Allowed);
        Assert.Equal(account, permissive.PresharedKey);
        Assert.Null(permissive.QuantumResistantSince);
    }
}
