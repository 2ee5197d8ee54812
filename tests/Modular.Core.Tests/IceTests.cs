using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Ice;
using Modular.WireGuard.Conn;

namespace Modular.Core.Tests;

public sealed class IceTests
{
    private static readonly IPEndPoint A = IPEndPoint.Parse("198.18.0.2:51820");
    private static readonly IPEndPoint B = IPEndPoint.Parse("198.18.0.3:51820");

    [Fact]
    public void Wireguard_and_stun_datagrams_are_told_apart_by_their_first_bytes()
    {
        var check = new byte[IceCheckMessage.MaxSize];
        var length = IceCheckMessage.Write(check, IceCheckMessage.BindingRequest, new byte[12], "abcd:efgh", "passwordpassword");
        Assert.True(PacketClassifier.IsStun(check.AsSpan(0, length)));
        Assert.False(PacketClassifier.IsWireGuard(check.AsSpan(0, length)));
        for (byte type = 1; type <= 4; type++)
        {
            var wireGuard = new byte[148];
            wireGuard[0] = type;
            // Even with the cookie where STUN has it, a WireGuard header wins.
            wireGuard[4] = 0x21; wireGuard[5] = 0x12; wireGuard[6] = 0xA4; wireGuard[7] = 0x42;
            Assert.True(PacketClassifier.IsWireGuard(wireGuard));
            Assert.False(PacketClassifier.IsStun(wireGuard));
        }

        Assert.False(PacketClassifier.IsStun(new byte[10]));
        Assert.False(PacketClassifier.IsStun(new byte[40]));
    }

    [Fact]
    public async Task Checks_pass_with_the_right_credentials_and_fail_with_a_wrong_password()
    {
        var network = new Wire();
        var agentA = new IceAgent(network.Port(A), TimeProvider.System, NullLogger.Instance);
        var agentB = new IceAgent(network.Port(B), TimeProvider.System, NullLogger.Instance);
        var credA = IceCredentials.Generate();
        var credB = IceCredentials.Generate();
        var seenByB = new ConcurrentBag<IPEndPoint>();
        using var registration = agentB.Register(credB, (from, _) => seenByB.Add(from));

        var ok = await agentA.CheckAsync(B, credA, credB, TimeSpan.FromSeconds(5), TimeSpan.FromMilliseconds(100), CancellationToken.None);
        Assert.NotNull(ok);
        Assert.Equal(B, ok.Value.Remote);
        Assert.Contains(A, seenByB);

        var droppedBefore = agentB.Dropped;
        var wrong = await agentA.CheckAsync(B, credA, credB with { Password = "wrongwrongwrongwrongwron" }, TimeSpan.FromMilliseconds(400), TimeSpan.FromMilliseconds(100), CancellationToken.None);
        Assert.Null(wrong);

        // B handles datagrams on its own receive loop, which a loaded machine can run late: wait for it, bounded.
        for (var i = 0; i < 50 && agentB.Dropped <= droppedBefore; i++)
        {
            await Task.Delay(100);
        }

        Assert.True(agentB.Dropped > droppedBefore, "B drops checks that fail integrity");

        registration.Dispose();
        var afterClose = await agentA.CheckAsync(B, credA, credB, TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(100), CancellationToken.None);
        Assert.Null(afterClose);
    }

    [Fact]
    public void Garbage_in_the_stun_range_is_dropped_without_throwing()
    {
        var network = new Wire();
        var agent = new IceAgent(network.Port(A), TimeProvider.System, NullLogger.Instance);
        var random = new Random(7);
        for (var i = 0; i < 2000; i++)
        {
            var datagram = new byte[random.Next(0, 200)];
            random.NextBytes(datagram);
            if (datagram.Length >= 8)
            {
                datagram[0] &= 0x3F;
                datagram[4] = 0x21; datagram[5] = 0x12; datagram[6] = 0xA4; datagram[7] = 0x42;
            }

            agent.OnStun(datagram, B);
        }

        Assert.Equal(2000, agent.Dropped);
    }

    [Theory]
    [InlineData("host 198.18.0.2:51820", true)]
    [InlineData("srflx 203.0.113.9:40000", true)]
    [InlineData("host 0.0.0.0:51820", false)]
    [InlineData("host 198.18.0.2:0", false)]
    [InlineData("relay 198.18.0.2:1", false)]
    [InlineData("host", false)]
    [InlineData("", false)]
    [InlineData("host 198.18.0.2:51820:7", false)]
    public void Candidates_parse_only_from_their_wire_form(string text, bool valid)
    {
        Assert.Equal(valid, IceCandidate.TryParse(text, out var candidate));
        if (valid)
        {
            Assert.Equal(text, candidate!.ToString());
        }
    }

    [Fact]
    public void The_demux_bind_hands_stun_to_ice_and_everything_else_to_wireguard()
    {
        var inner = new QueueBind();
        using var demux = new IceDemuxBind(inner);
        var received = new ConcurrentBag<int>();
        demux.SetReceiver(new Collector(received));
        var receive = Assert.Single(demux.Open(51820, out _));

        var check = new byte[IceCheckMessage.MaxSize];
        var checkLength = IceCheckMessage.Write(check, IceCheckMessage.BindingRequest, new byte[12], "abcd:efgh", "passwordpassword");
        var handshake = new byte[148];
        handshake[0] = 1;
        inner.Enqueue(check.AsSpan(0, checkLength).ToArray(), handshake, check.AsSpan(0, checkLength).ToArray(), new byte[] { 4, 0, 0, 0, 9, 9 });

        var packets = Enumerable.Range(0, 8).Select(_ => new byte[PacketBuffers.MaxSegmentSize]).ToArray();
        var sizes = new int[8];
        var endpoints = new WgEndpoint[8];
        var count = receive(packets, sizes, endpoints);

        Assert.Equal(2, count);
        Assert.Equal(148, sizes[0]);
        Assert.Equal(6, sizes[1]);
        Assert.Equal(1, packets[0][0]);
        Assert.Equal(4, packets[1][0]);
        Assert.Equal(2, received.Count);
        Assert.Equal(8, packets.Distinct().Count()); // every slot still owns its own buffer
    }

    /// <summary>An in-memory UDP wire between ICE transports.</summary>
    private sealed class Wire
    {
        private readonly ConcurrentDictionary<IPEndPoint, WirePort> _ports = new();

        public WirePort Port(IPEndPoint address) => _ports.GetOrAdd(address, a => new WirePort(this, a));

        public sealed class WirePort(Wire wire, IPEndPoint address) : IIceTransport
        {
            private IStunReceiver? _receiver;

            public int LocalPort => address.Port;

            public void Send(ReadOnlySpan<byte> datagram, IPEndPoint to)
            {
                if (wire._ports.TryGetValue(to, out var target) && target._receiver is { } receiver)
                {
                    var copy = datagram.ToArray();
                    ThreadPool.QueueUserWorkItem(_ => receiver.OnStun(copy, address));
                }
            }

            public void SetReceiver(IStunReceiver receiver) => _receiver = receiver;
        }
    }

    private sealed class Collector(ConcurrentBag<int> lengths) : IStunReceiver
    {
        public void OnStun(ReadOnlySpan<byte> datagram, IPEndPoint from) => lengths.Add(datagram.Length);
    }

    private sealed class QueueBind : IBind
    {
        private readonly ConcurrentQueue<byte[]> _queue = new();

        public int BatchSize => 8;

        public void Enqueue(params byte[][] datagrams)
        {
            foreach (var d in datagrams)
            {
                _queue.Enqueue(d);
            }
        }

        public IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort)
        {
            actualPort = port;
            return [(packets, sizes, endpoints) =>
            {
                var n = 0;
                while (n < packets.Length && _queue.TryDequeue(out var d))
                {
                    d.CopyTo(packets[n], 0);
                    sizes[n] = d.Length;
                    endpoints[n] = WgEndpoint.FromIPEndPoint(A);
                    n++;
                }

                return n;
            }];
        }

        public void Close()
        {
        }

        public void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint)
        {
        }

        public void Dispose()
        {
        }
    }
}
