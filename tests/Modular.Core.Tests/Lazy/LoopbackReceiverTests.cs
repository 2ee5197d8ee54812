using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Lazy;

namespace Modular.Core.Tests.Lazy;

/// <summary>The loopback monitor's socket read directly (no receive loop competing): addresses, bytes, drops, allocations.</summary>
public sealed class LoopbackReceiverTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(5);
    private readonly LoopbackReceiver _receiver = LoopbackReceiver.Open(NullLogger.Instance);
    private readonly Socket _sender = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

    public LoopbackReceiverTests() => _sender.Bind(new IPEndPoint(IPAddress.Loopback, 0));

    [Fact]
    public void A_datagram_comes_with_its_source_and_the_stand_in_address_it_was_sent_to()
    {
        var datagram = TestKeys.Initiation(0x3C);
        _sender.SendTo(datagram, new IPEndPoint(IPAddress.Parse("127.200.3.4"), _receiver.Port));

        Assert.Equal(LoopbackReceiver.Outcome.Datagram, ReceiveOne());
        Assert.Equal(0x7F00_0001u, _receiver.Source);
        Assert.Equal(0x7FC8_0304u, _receiver.Destination);
        Assert.Equal(datagram, _receiver.Datagram.ToArray());
        Assert.Equal(LoopbackReceiver.Outcome.Empty, _receiver.TryReceive());
        Assert.True(_receiver.BoundToLoopback);
        Assert.True(_receiver.Socket.ReceiveBufferSize > 64 * 1024, $"receive buffer {_receiver.Socket.ReceiveBufferSize}");
    }

    [Fact]
    public void Receiving_allocates_nothing_per_datagram()
    {
        var to = new IPEndPoint(IPAddress.Parse("127.128.0.1"), _receiver.Port);
        var datagram = TestKeys.Initiation(0x44);
        const int Count = 200;
        for (var i = 0; i < Count; i++)
        {
            _sender.SendTo(datagram, to);
        }

        Assert.Equal(LoopbackReceiver.Outcome.Datagram, ReceiveOne()); // the first call may JIT and set up marshalling
        var before = GC.GetAllocatedBytesForCurrentThread();
        var received = 1;
        while (received < Count && _receiver.TryReceive() == LoopbackReceiver.Outcome.Datagram)
        {
            received++;
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(Count, received);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void Datagrams_the_kernel_drops_on_a_full_queue_are_counted()
    {
        _receiver.Socket.ReceiveBufferSize = 8192; // a few datagrams' worth, whatever rmem_max allows
        var to = new IPEndPoint(IPAddress.Parse("127.128.0.1"), _receiver.Port);
        const int Burst = 200;
        for (var i = 0; i < Burst; i++)
        {
            _sender.SendTo(TestKeys.Initiation(0x55), to);
        }

        var received = 0;
        while (_receiver.TryReceive() == LoopbackReceiver.Outcome.Datagram)
        {
            received++;
        }

        // The count rides on the next datagram queued after the drops.
        _sender.SendTo(TestKeys.Initiation(0x56), to);
        Assert.Equal(LoopbackReceiver.Outcome.Datagram, ReceiveOne());
        Assert.InRange(received, 1, Burst - 1);
        Assert.Equal(Burst - received, _receiver.KernelDrops);
    }

    public void Dispose()
    {
        _sender.Dispose();
        _receiver.Dispose();
    }

    /// <summary>Loopback delivery is synchronous with the send, but poll briefly rather than rely on it.</summary>
    private LoopbackReceiver.Outcome ReceiveOne()
    {
        var deadline = DateTime.UtcNow + Wait;
        LoopbackReceiver.Outcome outcome;
        while ((outcome = _receiver.TryReceive()) == LoopbackReceiver.Outcome.Empty && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }

        return outcome;
    }
}
