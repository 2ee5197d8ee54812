using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyBind;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

public sealed class BindProxyTests
{
    private static readonly WgKey Peer = new(new byte[32]);

    [Fact]
    public async Task Forwards_both_ways_through_the_bind_hook()
    {
        var hook = new FakeBindHook();
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var sink = Assert.Single(hook.Claims);
        Assert.Equal(proxy.EndpointAddr, sink.Key);
        proxy.Work();

        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(1, 2));
        var (datagram, from) = await hook.Injected.Reader.ReadAsync(Bounded.Wait);
        Assert.Equal(WgFrames.Transport(1, 2), datagram);
        Assert.Equal(proxy.EndpointAddr, from);

        sink.Value.Send([3, 4, 5]);
        Assert.Equal([3, 4, 5], await relay.ToRelay.Reader.ReadAsync(Bounded.Wait));
    }

    [Fact]
    public async Task Malformed_and_oversized_datagrams_from_the_relay_are_dropped_and_counted()
    {
        var hook = new FakeBindHook();
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();
        await RelayJunk.AssertDroppedAndCountedAsync(proxy, relay, async () =>
        {
            var (datagram, from) = await hook.Injected.Reader.ReadAsync(Bounded.Wait);
            Assert.Equal(proxy.EndpointAddr, from);
            return datagram.ToArray();
        });
        Assert.False(hook.Injected.Reader.TryRead(out _));
    }

    [Fact]
    public async Task RedirectAs_changes_the_source_WireGuard_sees_and_Close_gives_the_endpoint_back()
    {
        var hook = new FakeBindHook();
        var relay = new InMemoryRelayedConnection();
        var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var asPeer = new IPEndPoint(IPAddress.Parse("198.18.0.9"), 51820);

        proxy.RedirectAs(asPeer);
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(9));
        Assert.Equal(asPeer, (await hook.Injected.Reader.ReadAsync(Bounded.Wait)).From);

        await proxy.CloseAsync();
        Assert.Empty(hook.Claims);
        Assert.True(relay.Disposed);
    }

    [Fact]
    public async Task Pause_stops_injecting_and_Work_resumes()
    {
        var hook = new FakeBindHook();
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(1));
        Assert.Equal(WgFrames.Transport(1), (await hook.Injected.Reader.ReadAsync(Bounded.Wait)).Datagram);

        proxy.Pause();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(2));
        await relay.WaitConsumedAsync(2);
        proxy.Work();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(3));
        Assert.Equal(WgFrames.Transport(3), (await hook.Injected.Reader.ReadAsync(Bounded.Wait)).Datagram);
        Assert.False(hook.Injected.Reader.TryRead(out _));
    }

    [Fact]
    public async Task Disconnected_is_raised_when_the_relay_closes()
    {
        var hook = new FakeBindHook();
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var raised = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        proxy.Disconnected += (_, _) => raised.TrySetResult();
        proxy.Work();

        relay.FromRelay.Writer.Complete();
        await raised.Task.WaitAsync(Bounded.Wait);
    }

    [Fact]
    public async Task Two_proxies_get_distinct_virtual_endpoints()
    {
        var hook = new FakeBindHook();
        await using var a = new BindProxy(hook, NullLogger.Instance);
        await using var b = new BindProxy(hook, NullLogger.Instance);
        await a.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        await b.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        Assert.NotEqual(a.EndpointAddr, b.EndpointAddr);
        Assert.Equal(2, hook.Claims.Count);
    }

    [Fact]
    public async Task The_factory_serves_userspace_interfaces_only()
    {
        var factory = new BindProxyFactory();
        var environment = new ProxyEnvironment(false, true);
        Assert.True(factory.CanProxy(new FakeWgIface(WgInterfaceMode.Userspace, bindHook: new FakeBindHook()), environment).CanProxy);

        var kernel = factory.CanProxy(new FakeWgIface(WgInterfaceMode.Kernel), environment);
        Assert.False(kernel.CanProxy);
        Assert.Contains("userspace", kernel.Reason, StringComparison.Ordinal);
        Assert.False(factory.CanProxy(new FakeWgIface(WgInterfaceMode.Userspace), environment).CanProxy);

        await Assert.ThrowsAsync<NotSupportedException>(async () =>
            await factory.CreateAsync(new FakeWgIface(WgInterfaceMode.Kernel), new FakePluginContext(), CancellationToken.None));
        await using var proxy = await factory.CreateAsync(new FakeWgIface(WgInterfaceMode.Userspace, bindHook: new FakeBindHook()), new FakePluginContext(), CancellationToken.None);
        Assert.Equal("bind", proxy.Kind);
    }
}
