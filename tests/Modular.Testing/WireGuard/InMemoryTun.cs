using System.Collections.Concurrent;
using Modular.WireGuard.Tun;

namespace Modular.Testing.WireGuard;

/// <summary>
/// An <see cref="ITun"/> in memory: tests inject IP packets "from the OS" and read what the device
/// writes back. Reading returns whole batches of whatever is queued.
/// </summary>
public sealed class InMemoryTun(string name = "mem0", int mtu = 1420) : ITun
{
    private readonly BlockingCollection<byte[]> _outbound = new(8192);
    private readonly BlockingCollection<byte[]> _written = new(8192);
    private long _writeCalls;

    public string Name { get; } = name;

    public int Mtu { get; } = mtu;

    public int BatchSize { get; init; } = 128;

    /// <summary>How many Write calls the device made (to check that writes are batched).</summary>
    public long WriteCalls => Interlocked.Read(ref _writeCalls);

    /// <summary>Queues an IP packet as if the OS routed it into the tunnel; false once disposed.</summary>
    public bool Inject(ReadOnlySpan<byte> packet)
    {
        try
        {
            return _outbound.TryAdd(packet.ToArray());
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the next packet the device wrote; null on timeout.</summary>
    public byte[]? TryReadWritten(TimeSpan timeout) => _written.TryTake(out var packet, timeout) ? packet : null;

    public int Read(byte[][] packets, int[] sizes, int offset)
    {
        byte[] packet;
        try
        {
            packet = _outbound.Take();
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(Name);
        }

        var count = 0;
        do
        {
            packet.CopyTo(packets[count], offset);
            sizes[count] = packet.Length;
            count++;
        }
        while (count < packets.Length && _outbound.TryTake(out packet!));

        return count;
    }

    public void Write(byte[][] packets, int[] sizes, int offset, int count)
    {
        ObjectDisposedException.ThrowIf(_written.IsAddingCompleted, this);
        Interlocked.Increment(ref _writeCalls);
        for (var i = 0; i < count; i++)
        {
            _written.TryAdd(packets[i].AsSpan(offset, sizes[i]).ToArray());
        }
    }

    public void Dispose()
    {
        _outbound.CompleteAdding();
        _written.CompleteAdding();
    }
}
