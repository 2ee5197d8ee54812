using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyEbpf;
using Modular.Plugins.Rosenpass;

namespace Modular.Composition.Tests.Plugins;

public sealed class PlaceholderPluginTests
{
    [Fact]
    public async Task Ebpf_declines_unless_kernel_mode_root_and_enabled_and_says_it_is_not_built()
    {
        var factory = new EbpfProxyFactory();
        var kernel = new FakeWgIface(WgInterfaceMode.Kernel);

        Assert.False(factory.CanProxy(new FakeWgIface(WgInterfaceMode.Userspace), new ProxyEnvironment(false, true)).CanProxy);
        var disabled = factory.CanProxy(kernel, new ProxyEnvironment(EbpfDisabled: true, IsRoot: true));
        Assert.False(disabled.CanProxy);
        Assert.Contains("NB_DISABLE_EBPF_WG_PROXY", disabled.Reason, StringComparison.Ordinal);
        var unprivileged = factory.CanProxy(kernel, new ProxyEnvironment(false, IsRoot: false));
        Assert.False(unprivileged.CanProxy);
        Assert.Contains("root", unprivileged.Reason, StringComparison.Ordinal);
        Assert.True(factory.CanProxy(kernel, new ProxyEnvironment(false, true)).CanProxy);

        var ex = await Assert.ThrowsAsync<NotSupportedException>(async () => await factory.CreateAsync(kernel, new FakePluginContext(), CancellationToken.None));
        Assert.Equal("eBPF proxy not built yet", ex.Message);
        Assert.StartsWith("Not built yet", factory.Description, StringComparison.Ordinal);
    }

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
