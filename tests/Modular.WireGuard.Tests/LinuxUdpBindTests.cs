using System.Net;
using Modular.WireGuard.Conn;

namespace Modular.WireGuard.Tests;

/// <summary>The batched UDP bind on loopback: GSO on send, GRO on receive, fallbacks, close.</summary>
public class LinuxUdpBindTests
{
    private static byte[][] Buffers(int count)
    {
        var buffers = new byte[count][];
        for (var i = 0; i < count; i++)
        {
            buffers[i] = new byte[PacketBuffers.MaxSegmentSize];
        }

        return buffers;
    }

    private static byte[] Datagram(int index, int length)
    {
        var datagram = new byte[length];
        new Random(index).NextBytes(datagram);
        datagram[0] = (byte)index;
        datagram[1] = (byte)(index >> 8);
        return datagram;
    }

    /// <summary>Receives until <paramref name="expected"/> datagrams arrived or a bounded time passed.</summary>
    private static List<(byte[] Data, WgEndpoint From)> ReceiveAll(ReceiveFunc receive, int expected, List<int> batchSizes)
    {
        var received = new List<(byte[], WgEndpoint)>();
        var packets = Buffers(128);
        var sizes = new int[128];
        var endpoints = new WgEndpoint[128];
        var task = Task.Run(() =>
        {
            while (received.Count < expected)
            {
                var n = receive(packets, sizes, endpoints);
                batchSizes.Add(n);
                for (var i = 0; i < n; i++)
                {
                    received.Add((packets[i].AsSpan(0, sizes[i]).ToArray(), endpoints[i]));
                }
            }
        });
        Assert.True(task.Wait(TimeSpan.FromSeconds(10)), $"received {received.Count} of {expected}");
        return received;
    }

    [Theory]
    [InlineData("127.0.0.1", true)]
    [InlineData("::1", true)]
    [InlineData("127.0.0.1", false)]
    public void BatchOfDatagramsArrivesIntactAndInOrder(string loopback, bool offloads)
    {
        using var sender = new UdpBind(offloads);
        using var receiver = new UdpBind(offloads);
        sender.Open(0, out var senderPort);
        var receive = receiver.Open(0, out var receiverPort);
        Assert.Single(receive);
        Assert.Equal(offloads, receiver.GroEnabled);

        // 100 equal-size datagrams, then a short one: one GSO send, one GRO receive where offloads are on.
        var datagrams = Enumerable.Range(0, 100).Select(i => Datagram(i, 1300)).Append(Datagram(100, 77)).ToArray();
        var sizes = datagrams.Select(d => d.Length).ToArray();
        var destination = WgEndpoint.FromIPEndPoint(new IPEndPoint(IPAddress.Parse(loopback), receiverPort));
        var batches = new List<int>();

        sender.Send(datagrams, sizes, datagrams.Length, destination);
        var received = ReceiveAll(receive[0], datagrams.Length, batches);

        Assert.Equal(datagrams.Length, received.Count);
        for (var i = 0; i < datagrams.Length; i++)
        {
            Assert.Equal(datagrams[i], received[i].Data);
            Assert.Equal(senderPort, received[i].From.Port);
            Assert.Equal(IPAddress.Parse(loopback).AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork, received[i].From.IsIPv4);
        }

        Assert.Equal(offloads, sender.GsoEnabled);
        Assert.Equal(0, sender.SendErrors);
        Assert.True(batches.Max() > 1, "recvmmsg/GRO returns more than one datagram per call");
    }

    [Fact]
    public void MixedSizesAndMoreThanABatchAreAllDelivered()
    {
        using var sender = new UdpBind();
        using var receiver = new UdpBind();
        sender.Open(0, out _);
        var receive = receiver.Open(0, out var port);
        var datagrams = Enumerable.Range(0, 300).Select(i => Datagram(i, 40 + (i % 7 == 0 ? 1400 : i % 5 * 100))).ToArray();
        var destination = WgEndpoint.FromIPEndPoint(new IPEndPoint(IPAddress.Loopback, port));

        sender.Send(datagrams, datagrams.Select(d => d.Length).ToArray(), datagrams.Length, destination);
        var received = ReceiveAll(receive[0], datagrams.Length, []);

        Assert.Equal(datagrams.Select(d => Convert.ToHexString(d)), received.Select(r => Convert.ToHexString(r.Data)));
    }

    [Fact]
    public async Task ADatagramTooBigForTheCallersBufferIsDroppedAlone()
    {
        using var sender = new UdpBind();
        using var receiver = new UdpBind();
        sender.Open(0, out _);
        var receive = receiver.Open(0, out var port);
        var destination = WgEndpoint.FromIPEndPoint(new IPEndPoint(IPAddress.Loopback, port));
        byte[][] datagrams = [Datagram(1, 100), Datagram(2, 3000), Datagram(3, 100)];
        foreach (var datagram in datagrams)
        {
            sender.Send([datagram], [datagram.Length], 1, destination);
        }

        var small = Enumerable.Range(0, 4).Select(_ => new byte[1500]).ToArray();
        var sizes = new int[4];
        var received = new List<byte[]>();
        var task = Task.Run(() =>
        {
            while (received.Count < 2)
            {
                var n = receive[0](small, sizes, new WgEndpoint[4]);
                received.AddRange(Enumerable.Range(0, n).Select(i => small[i].AsSpan(0, sizes[i]).ToArray()));
            }
        });

        await task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal([datagrams[0], datagrams[2]], received);
    }

    [Fact]
    public void CloseUnblocksAReceiverAndTheBindReopens()
    {
        using var bind = new UdpBind();
        var receive = bind.Open(0, out _);
        var blocked = Task.Run(() => receive[0](Buffers(4), new int[4], new WgEndpoint[4]));
        Thread.Sleep(200);
        Assert.False(blocked.IsCompleted);

        bind.Close();

        var error = Assert.Throws<AggregateException>(() => blocked.Wait(TimeSpan.FromSeconds(5)));
        Assert.IsType<ObjectDisposedException>(error.InnerException);
        Assert.Throws<ObjectDisposedException>(() => bind.Send([new byte[10]], [10], 1, new WgEndpoint(1, 1)));

        var again = bind.Open(0, out var port);
        Assert.NotEqual(0, port);
        Assert.Single(again);
    }

    [Fact]
    public void SendToAnUnreachableEndpointDoesNotThrow()
    {
        using var bind = new UdpBind();
        bind.Open(0, out _);
        using var closedPort = new UdpBind();
        closedPort.Open(0, out var port);
        closedPort.Close();

        // ICMP port unreachable comes back as ECONNREFUSED on a later call: it must not surface as an exception.
        var destination = WgEndpoint.FromIPEndPoint(new IPEndPoint(IPAddress.Loopback, port));
        for (var i = 0; i < 3; i++)
        {
            bind.Send([new byte[100], new byte[100]], [100, 100], 2, destination);
        }
    }
}
