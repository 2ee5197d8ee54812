using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.MeshDns;
using static Modular.Core.Tests.Dns.DnsTestMessages;

namespace Modular.Core.Tests.Dns;

/// <summary>The listener on 127.0.0.1: UDP and TCP answers, garbage that does not stop it, and the engine-facing service.</summary>
public sealed class DnsServerTests : IAsyncLifetime
{
    private readonly DnsForwarder _forwarder = new(null, TimeProvider.System, NullLogger.Instance);
    private DnsServer _server = null!;

    public Task InitializeAsync()
    {
        var resolver = new DnsResolver(_forwarder, NullLogger.Instance) { Records = DnsRecords.FromMap(Map()) };
        _server = DnsServer.Start(resolver, new IPEndPoint(IPAddress.Loopback, 0), NullLogger.Instance, new DnsServerOptions { MaxTcpConnections = 2 });
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        _forwarder.Dispose();
    }

    /// <summary>One query, retried like a stub resolver does (a burst before it may have filled the socket buffer on a loaded machine).</summary>
    private async Task<Response> UdpAsync(byte[] query)
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        client.Connect(_server.LocalEndPoint);
        var buffer = new byte[4096];
        for (var attempt = 1; ; attempt++)
        {
            await client.SendAsync(query);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try
            {
                var n = await client.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                return Parse(buffer.AsSpan(0, n));
            }
            catch (OperationCanceledException) when (attempt < 5)
            {
            }
        }
    }

    private static async Task<Response> TcpExchangeAsync(Socket client, byte[] query)
    {
        var framed = new byte[query.Length + 2];
        BinaryPrimitives.WriteUInt16BigEndian(framed, (ushort)query.Length);
        query.CopyTo(framed, 2);
        await client.SendAsync(framed);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var length = new byte[2];
        await client.ReceiveAsync(length, SocketFlags.None, timeout.Token);
        var message = new byte[BinaryPrimitives.ReadUInt16BigEndian(length)];
        for (var got = 0; got < message.Length;)
        {
            got += await client.ReceiveAsync(message.AsMemory(got), SocketFlags.None, timeout.Token);
        }

        return Parse(message);
    }

    [Fact]
    public async Task Udp_answers_the_captured_dig_query()
    {
        var r = await UdpAsync(DigQueryWithEdns);
        Assert.Equal(0x1bc4, r.Id);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2")], r.Answers);
    }

    [Fact]
    public async Task Tcp_answers_several_queries_on_one_connection()
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(_server.LocalEndPoint);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.1")], (await TcpExchangeAsync(client, Query("alpha.modular.internal", 1))).Answers);
        Assert.Equal((int)DnsRcode.NxDomain, (await TcpExchangeAsync(client, Query("zz.modular.internal", 1))).Rcode);
    }

    [Fact]
    public async Task Garbage_and_responses_do_not_stop_the_listener()
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        client.Connect(_server.LocalEndPoint);
        var random = new Random(7);
        for (var i = 0; i < 200; i++)
        {
            var junk = new byte[random.Next(3, 600)];
            random.NextBytes(junk);
            junk[2] |= 0x80; // responses: never answered, so nothing piles up in the socket
            await client.SendAsync(junk);
        }

        // A TCP client sending junk is cut off; the next one is served.
        using (var bad = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await bad.ConnectAsync(_server.LocalEndPoint);
            await bad.SendAsync(new byte[] { 0, 3, 1, 2, 3 });
        }

        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2")], (await UdpAsync(Query("peer-b.modular.internal", 1))).Answers);
        using var good = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await good.ConnectAsync(_server.LocalEndPoint);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2")], (await TcpExchangeAsync(good, Query("peer-b.modular.internal", 1))).Answers);
    }

    [Fact]
    public async Task Tcp_connections_past_the_bound_are_closed_and_a_freed_slot_serves_again()
    {
        using var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await first.ConnectAsync(_server.LocalEndPoint);
        await second.ConnectAsync(_server.LocalEndPoint);
        // Both are served (so both were accepted and counted) before the third arrives.
        Assert.Equal(0, (await TcpExchangeAsync(first, Query("alpha.modular.internal", 1))).Rcode);
        Assert.Equal(0, (await TcpExchangeAsync(second, Query("alpha.modular.internal", 1))).Rcode);

        using (var third = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await third.ConnectAsync(_server.LocalEndPoint);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var closed = false;
            try
            {
                closed = await third.ReceiveAsync(new byte[2], SocketFlags.None, timeout.Token) == 0;
            }
            catch (SocketException)
            {
                closed = true; // reset
            }

            Assert.True(closed, "a third connection past MaxTcpConnections = 2 must be closed");
        }

        first.Shutdown(SocketShutdown.Both);
        first.Close();
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Response? answer = null;
        for (var attempt = 0; attempt < 50 && answer is null; attempt++)
        {
            // The server notices the first connection's end asynchronously; until then a new one may be refused.
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await probe.ConnectAsync(_server.LocalEndPoint);
            try
            {
                answer = await TcpExchangeAsync(probe, Query("peer-b.modular.internal", 1));
            }
            catch (Exception e) when (e is SocketException or IndexOutOfRangeException or ArgumentOutOfRangeException or Xunit.Sdk.XunitException)
            {
                await Task.Delay(100);
            }
        }

        Assert.NotNull(answer);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2")], answer.Answers);
    }

    [Fact]
    public async Task The_service_listens_on_the_maps_overlay_address_follows_it_and_stops()
    {
        await using var service = new MeshDnsService(0, NullLoggerFactory.Instance, TimeProvider.System);
        var events = new List<IPEndPoint?>();
        service.ListeningChanged += events.Add;
        var map = Map();
        map.PeerConfig.Address = "127.0.0.1/8"; // loopback stands in for the overlay address here
        await service.ApplyAsync(map, default);
        var first = service.Listening;
        Assert.NotNull(first);
        Assert.Equal(IPAddress.Loopback, first.Address);
        await service.ApplyAsync(map, default); // same address: nothing moves
        Assert.Equal(first, service.Listening);

        map.PeerConfig.Address = "127.0.0.2/8";
        await service.ApplyAsync(map, default);
        Assert.Equal(IPAddress.Parse("127.0.0.2"), service.Listening?.Address);
        Assert.Equal(3, service.Resolver.Records.HostCount);

        map.Dns.Enabled = false;
        await service.ApplyAsync(map, default);
        Assert.Null(service.Listening);
        Assert.Equal(0, service.Resolver.Records.HostCount);
        Assert.Equal([first, null, IPAddress.Parse("127.0.0.2"), null], events.Select(e => e is null ? null : (object)(e == first ? first : e.Address)));
    }

    [Fact]
    public async Task A_port_in_use_is_retried_until_it_is_free()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)squatter.LocalEndPoint!).Port;
        await using var service = new MeshDnsService(port, NullLoggerFactory.Instance, time);
        var events = new List<IPEndPoint?>();
        service.ListeningChanged += endpoint => { lock (events) { events.Add(endpoint); } };
        var map = Map();
        map.PeerConfig.Address = "127.0.0.1/8";
        await service.ApplyAsync(map, default);
        Assert.Null(service.Listening);

        time.Advance(MeshDnsService.BindRetryInterval);
        Assert.Null(service.Listening); // still taken

        squatter.Close();
        time.Advance(MeshDnsService.BindRetryInterval);
        for (var i = 0; i < 100 && service.Listening is null; i++)
        {
            await Task.Delay(50);
        }

        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), service.Listening);
        lock (events)
        {
            Assert.Equal([new IPEndPoint(IPAddress.Loopback, port)], events);
        }
    }
}
