using Modular.Abstractions.Flows;

namespace Modular.Plugins.Netflow;

/// <summary>
/// Keeps the newest <see cref="Capacity"/> flow events; when full, the oldest is overwritten
/// and counted in <see cref="Dropped"/>, so memory stays bounded and loss is never silent.
/// </summary>
public sealed class MemoryFlowSink : IFlowSink
{
    private readonly FlowEvent?[] _ring;
    private readonly Lock _gate = new();
    private int _next;
    private int _count;
    private long _dropped;
    private bool _disposed;

    public MemoryFlowSink(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _ring = new FlowEvent?[capacity];
    }

    public int Capacity => _ring.Length;

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    /// <summary>Events lost: overwritten when full, or emitted after disposal.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    public void Emit(FlowEvent flowEvent)
    {
        ArgumentNullException.ThrowIfNull(flowEvent);
        lock (_gate)
        {
            if (_disposed)
            {
                Interlocked.Increment(ref _dropped);
                return;
            }

            if (_count == _ring.Length)
            {
                Interlocked.Increment(ref _dropped);
            }
            else
            {
                _count++;
            }

            _ring[_next] = flowEvent;
            _next = (_next + 1) % _ring.Length;
        }
    }

    /// <summary>The kept events, oldest first.</summary>
    public IReadOnlyList<FlowEvent> Snapshot()
    {
        lock (_gate)
        {
            var result = new List<FlowEvent>(_count);
            var start = (_next - _count + _ring.Length) % _ring.Length;
            for (var i = 0; i < _count; i++)
            {
                result.Add(_ring[(start + i) % _ring.Length]!);
            }

            return result;
        }
    }

    public ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _disposed = true;
            Array.Clear(_ring);
            _count = 0;
        }

        return ValueTask.CompletedTask;
    }
}
