using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyEbpf;

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
}
