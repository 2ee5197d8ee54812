using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyUdp;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>The UDP proxy on loopback, with a plain UDP socket standing in for WireGuard.</summary>
public sealed class UdpProxyTests : IAsyncLifetime
{
    private static readonly WgKey Peer = new(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());

    private readonly Socket _wireGuard = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    private readonly InMemoryRelayedConnection _relay = new();
    private UdpProxy _proxy = null!;

    public async Task InitializeAsync()
    {
        _wireGuard.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _proxy = new UdpProxy(((IPEndPoint)_wireGuard.LocalEndPoint!).Port, NullLogger.Instance);
        await _proxy.AddRelayedConnAsync(_relay, Peer, CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _proxy.CloseAsync();
        _wireGuard.Dispose();
    }

    private async Task<(byte[] Data, IPEndPoint From)> WireGuardReceivesAsync()
    {
        var buffer = new byte[2048];
        var result = await _wireGuard.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), Bounded.Wait);
        return (buffer[..result.ReceivedBytes], (IPEndPoint)result.RemoteEndPoint);
    }

    [Fact]
    public async Task Forwards_both_ways_and_WireGuard_sees_the_proxy_endpoint_as_the_peer()
    {
        // The peer's own address of 127.192.0.0/10 on the shared socket's port.
        Assert.Equal(IPAddress.Parse("127.192.0.1"), _proxy.EndpointAddr.Address);
        Assert.Equal(_proxy.Shared.Port, _proxy.EndpointAddr.Port);
        Assert.NotEqual(0, _proxy.EndpointAddr.Port);
        _proxy.Work();

        for (var i = 0; i < 20; i++)
        {
            var fromRelay = WgFrames.Transport(1, 2, 3, (byte)i);
            await _relay.FromRelay.Writer.WriteAsync(fromRelay);
            var (data, from) = await WireGuardReceivesAsync();
            Assert.Equal(fromRelay, data);
            Assert.Equal(_proxy.EndpointAddr, from);

            var fromWireGuard = new byte[] { 9, 8, (byte)i };
            await _wireGuard.SendToAsync(fromWireGuard, SocketFlags.None, from);
            Assert.Equal(fromWireGuard, await _relay.ToRelay.Reader.ReadAsync(Bounded.Wait));
        }
    }

    [Fact]
    public async Task A_large_datagram_passes_whole()
    {
        _proxy.Work();
        var big = new byte[60_000];
        new Random(7).NextBytes(big);
        WgFrames.AsTransport(big);
        await _relay.FromRelay.Writer.WriteAsync(big);
        var buffer = new byte[65_536];
        var result = await _wireGuard.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), Bounded.Wait);
        Assert.Equal(big, buffer[..result.ReceivedBytes]);
    }

    [Fact]
    public async Task Malformed_and_oversized_datagrams_from_the_relay_are_dropped_and_counted()
    {
        _proxy.Work();
        var buffer = new byte[65_536];
        await RelayJunk.AssertDroppedAndCountedAsync(_proxy, _relay, async () =>
        {
            var result = await _wireGuard.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), Bounded.Wait);
            Assert.Equal(_proxy.EndpointAddr, result.RemoteEndPoint);
            return buffer[..result.ReceivedBytes];
        });
    }

    [Fact]
    public async Task Pause_stops_relay_to_WireGuard_and_Work_resumes()
    {
        _proxy.Work();
        await _relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(1));
        Assert.Equal(WgFrames.Transport(1), (await WireGuardReceivesAsync()).Data);

        _proxy.Pause();
        await _relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(2));
        await _relay.WaitConsumedAsync(2);

        // WireGuard to relay keeps flowing while paused.
        await _wireGuard.SendToAsync(new byte[] { 7 }, SocketFlags.None, _proxy.EndpointAddr);
        Assert.Equal([7], await _relay.ToRelay.Reader.ReadAsync(Bounded.Wait));

        _proxy.Work();
        await _relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(3));
        Assert.Equal(WgFrames.Transport(3), (await WireGuardReceivesAsync()).Data);
        Assert.Equal(0, _wireGuard.Available);
    }

    [Fact]
    public async Task CloseAsync_frees_the_socket_and_closes_the_relayed_connection()
    {
        _proxy.Work();
        var endpoint = _proxy.EndpointAddr;
        var disconnected = 0;
        _proxy.Disconnected += (_, _) => Interlocked.Increment(ref disconnected);

        await _proxy.CloseAsync();
        await _proxy.CloseAsync(); // idempotent

        Assert.True(_relay.Disposed);
        Assert.False(_proxy.Shared.IsOpen); // its last peer gone, the shared socket is closed
        using var reuse = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        reuse.Bind(endpoint); // throws AddressAlreadyInUse if the proxy still held it
        Assert.Equal(0, disconnected);
        Assert.Throws<ObjectDisposedException>(() => _proxy.Work());
    }

    [Fact]
    public async Task Disconnected_is_raised_once_when_the_relayed_connection_closes()
    {
        var raised = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var count = 0;
        _proxy.Disconnected += (_, _) =>
        {
            Interlocked.Increment(ref count);
            raised.TrySetResult();
        };
        _proxy.Work();

        _relay.FromRelay.Writer.Complete();

        await raised.Task.WaitAsync(Bounded.Wait);
        await _proxy.CloseAsync();
        Assert.Equal(1, count);
    }

    [Fact]
    public async Task A_WireGuard_that_is_not_listening_drops_datagrams_without_breaking_the_proxy()
    {
        var port = ((IPEndPoint)_wireGuard.LocalEndPoint!).Port;
        _wireGuard.Dispose();
        await using var relay = new InMemoryRelayedConnection();
        await using var proxy = new UdpProxy(port, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();

        for (var i = 0; i < 5; i++)
        {
            await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport((byte)i));
        }

        await relay.WaitConsumedAsync(5);

        using var wireGuard = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        wireGuard.Bind(new IPEndPoint(IPAddress.Loopback, port));
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(42));
        var buffer = new byte[64];
        var result = await wireGuard.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), Bounded.Wait);
        Assert.Equal(WgFrames.Transport(42), buffer[..result.ReceivedBytes]);
    }

    [Fact]
    public async Task Work_before_a_relayed_connection_is_an_error()
    {
        await using var proxy = new UdpProxy(51820, NullLogger.Instance);
        Assert.Throws<InvalidOperationException>(() => proxy.Work());
        Assert.Throws<InvalidOperationException>(() => proxy.EndpointAddr);
        Assert.Throws<InvalidOperationException>(() => proxy.RedirectAs(new IPEndPoint(IPAddress.Loopback, 1)));
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
            await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        });
    }

    /// <summary>
    /// Issue 16: a redirect (a relayed peer switched to its direct endpoint, the proxy kept) hands relay datagrams to
    /// WireGuard as from that endpoint AND at the local address a packet from there would arrive on, as a real WireGuard
    /// bound to all addresses sees it (at 127.0.0.1 it would answer the direct endpoint from 127.0.0.1, which cannot
    /// leave lo); redirected back to the proxy's own endpoint, they come from it again, to 127.0.0.1. It runs in a
    /// namespace of its own whose default route leaves through a veth pair inside it, so it depends on none of the host's routes.
    /// </summary>
    [SkippableFact]
    public async Task RedirectAs_makes_relay_datagrams_come_from_the_given_endpoint_to_the_address_it_is_reached_on()
    {
        Prerequisites.RequireRoot();
        using var rig = NamespacedWireGuard.Create("ur");
        rig.Namespace.Exec("ip link add ur0 type veth peer name ur1");
        rig.Namespace.Exec("ip addr add 198.18.6.2/24 dev ur0");
        rig.Namespace.Exec("ip link set ur0 up");
        rig.Namespace.Exec("ip link set ur1 up");
        rig.Namespace.Exec("ip route add default via 198.18.6.1 dev ur0");
        var reachedOn = IPAddress.Parse("198.18.6.2");
        var asPeer = new IPEndPoint(IPAddress.Parse("198.18.7.7"), 40123);

        // The stand-in for WireGuard is bound to every address, as kernel WireGuard and wireguard-go are; it reports each datagram's destination.
        var wireGuard = rig.WireGuard;
        wireGuard.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.PacketInformation, true);
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new UdpProxy(((IPEndPoint)wireGuard.LocalEndPoint!).Port, NullLogger.Instance);

        // The shared socket opens with the first relayed connection: in the namespace, next to the stand-in.
        rig.Run(() =>
        {
            proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None).AsTask().GetAwaiter().GetResult();
            return 0;
        });
        proxy.Work();

        async Task<(byte[] Data, IPEndPoint From, IPAddress To)> ReceiveAsync()
        {
            var buffer = new byte[2048];
            var result = await wireGuard.ReceiveMessageFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), Bounded.Wait);
            return (buffer[..result.ReceivedBytes], (IPEndPoint)result.RemoteEndPoint, result.PacketInformation.Address);
        }

        // The redirect opens its raw socket, and looks up its route, in the namespace.
        rig.Run(() =>
        {
            proxy.RedirectAs(asPeer);
            return 0;
        });
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(5, 6, 7));
        var (data, from, to) = await ReceiveAsync();
        Assert.Equal(WgFrames.Transport(5, 6, 7), data);
        Assert.Equal(asPeer, from);
        Assert.Equal(reachedOn, to);

        rig.Run(() =>
        {
            proxy.RedirectAs(proxy.EndpointAddr);
            return 0;
        });
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(8));
        (data, from, to) = await ReceiveAsync();
        Assert.Equal(WgFrames.Transport(8), data);
        Assert.Equal(proxy.EndpointAddr, from);
        Assert.Equal(IPAddress.Loopback, to);
    }

    [Fact]
    public async Task The_factory_serves_both_modes_and_creates_a_proxy_for_the_listen_port()
    {
        var factory = new UdpProxyFactory();
        var environment = new ProxyEnvironment(EbpfDisabled: false, IsRoot: false);
        Assert.True(factory.CanProxy(new FakeWgIface(WgInterfaceMode.Userspace), environment).CanProxy);
        Assert.True(factory.CanProxy(new FakeWgIface(WgInterfaceMode.Kernel), environment).CanProxy);

        var port = ((IPEndPoint)_wireGuard.LocalEndPoint!).Port;
        await using var proxy = await factory.CreateAsync(new FakeWgIface(WgInterfaceMode.Kernel, port), new FakePluginContext(), CancellationToken.None);
        Assert.Equal("udp", proxy.Kind);
        var relay = new InMemoryRelayedConnection();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(4, 4));
        var (data, from) = await WireGuardReceivesAsync();
        Assert.Equal(WgFrames.Transport(4, 4), data);
        Assert.Equal(proxy.EndpointAddr, from);
    }

    [Fact]
    public async Task Many_relayed_peers_share_one_socket_each_at_its_own_address()
    {
        const int Peers = 50;
        var port = ((IPEndPoint)_wireGuard.LocalEndPoint!).Port;
        var shared = new SharedProxySocket(port, NullLogger.Instance);
        var relays = new List<InMemoryRelayedConnection>();
        var proxies = new List<UdpProxy>();
        try
        {
            for (var i = 0; i < Peers; i++)
            {
                var relay = new InMemoryRelayedConnection();
                var proxy = new UdpProxy(shared, NullLogger.Instance);
                await proxy.AddRelayedConnAsync(relay, new WgKey(Enumerable.Repeat((byte)(i + 1), 32).ToArray()), CancellationToken.None);
                proxy.Work();
                relays.Add(relay);
                proxies.Add(proxy);
            }

            Assert.Equal(1, shared.SocketsOpened);
            Assert.Equal(Peers, shared.Peers);
            Assert.All(proxies, p => Assert.Equal(shared.Port, p.EndpointAddr.Port));
            Assert.Equal(Peers, proxies.Select(p => p.EndpointAddr.Address).Distinct().Count());
            Assert.All(proxies, p => Assert.Equal(192, p.EndpointAddr.Address.GetAddressBytes()[1] & 0xC0));

            for (var i = 0; i < Peers; i++)
            {
                // Relay -> WireGuard: each peer's datagram arrives from that peer's own endpoint.
                var fromRelay = WgFrames.Transport(1, (byte)i);
                await relays[i].FromRelay.Writer.WriteAsync(fromRelay);
                var (data, from) = await WireGuardReceivesAsync();
                Assert.Equal(fromRelay, data);
                Assert.Equal(proxies[i].EndpointAddr, from);
            }

            // WireGuard -> relay: what WireGuard sends to a peer's endpoint goes over that peer's relay only.
            for (var i = Peers - 1; i >= 0; i--)
            {
                await _wireGuard.SendToAsync(new byte[] { 2, (byte)i }, SocketFlags.None, proxies[i].EndpointAddr);
                Assert.Equal([2, (byte)i], await relays[i].ToRelay.Reader.ReadAsync(Bounded.Wait));
            }

            Assert.All(relays, r => Assert.False(r.ToRelay.Reader.TryRead(out _)));
        }
        finally
        {
            foreach (var proxy in proxies)
            {
                await proxy.CloseAsync();
            }
        }

        Assert.Equal(0, shared.Peers);
        Assert.False(shared.IsOpen);
    }

    [Fact]
    public async Task Datagrams_not_from_WireGuard_or_to_no_peer_are_dropped_and_counted()
    {
        _proxy.Work();
        using var stranger = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        stranger.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        // From a port that is not WireGuard's, to a peer's address; and from WireGuard to an address nobody holds.
        await stranger.SendToAsync(new byte[] { 6 }, SocketFlags.None, _proxy.EndpointAddr);
        await _wireGuard.SendToAsync(new byte[] { 6 }, SocketFlags.None, new IPEndPoint(IPAddress.Parse("127.192.9.9"), _proxy.EndpointAddr.Port));
        await _wireGuard.SendToAsync(new byte[] { 6 }, SocketFlags.None, new IPEndPoint(IPAddress.Loopback, _proxy.EndpointAddr.Port));

        // Then a real one: it arrives, and the three before it were counted, not forwarded.
        await _wireGuard.SendToAsync(new byte[] { 7 }, SocketFlags.None, _proxy.EndpointAddr);
        Assert.Equal([7], await _relay.ToRelay.Reader.ReadAsync(Bounded.Wait));
        Assert.Equal(3, _proxy.Shared.DatagramsDropped);
        Assert.False(_relay.ToRelay.Reader.TryRead(out _));
    }

    [Fact]
    public async Task The_factory_gives_every_proxy_of_an_interface_the_same_socket()
    {
        var factory = new UdpProxyFactory();
        var port = ((IPEndPoint)_wireGuard.LocalEndPoint!).Port;
        var iface = new FakeWgIface(WgInterfaceMode.Kernel, port);
        await using var a = (UdpProxy)await factory.CreateAsync(iface, new FakePluginContext(), CancellationToken.None);
        await using var b = (UdpProxy)await factory.CreateAsync(iface, new FakePluginContext(), CancellationToken.None);

        Assert.Same(a.Shared, b.Shared);
        await a.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        await b.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        Assert.Equal(a.EndpointAddr.Port, b.EndpointAddr.Port);
        Assert.NotEqual(a.EndpointAddr.Address, b.EndpointAddr.Address);
        Assert.Equal(1, a.Shared.SocketsOpened);
    }
}
