using Modular.Abstractions.Flows;

namespace Modular.Plugins.Netflow;

/// <summary>
/// The events waiting for the server's acknowledgement, oldest first, in a fixed array of <see cref="Capacity"/>
/// slots: adding never allocates, and when every slot is taken the oldest event makes room (the caller counts it).
/// An acknowledged event leaves a hole that the head skips; holes behind the head (a partial acknowledgement) are
/// packed away by <see cref="Remove"/>, so a full store always means <see cref="Capacity"/> events.
/// </summary>
/// <remarks>
/// Thread-safe. <see cref="Add"/> runs on the packet path and holds the lock for a few stores only;
/// <see cref="CopyOldest"/> and <see cref="Remove"/> run on the one shipping loop.
/// </remarks>
internal sealed class PendingFlowStore
{
    private readonly FlowEvent?[] _slots;
    private readonly Lock _gate = new();

    // Guarded by _gate. Event n lives in _slots[n % Capacity]; _head is the oldest slot in use, _tail the next free.
    private long _head;
    private long _tail;
    private int _count;

    public PendingFlowStore(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _slots = new FlowEvent?[capacity];
    }

    public int Capacity => _slots.Length;

    /// <summary>Events held now.</summary>
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

    /// <summary>Keeps <paramref name="flowEvent"/>; returns the event it pushed out when the store was full, else null.</summary>
    public FlowEvent? Add(FlowEvent flowEvent)
    {
        lock (_gate)
        {
            FlowEvent? pushedOut = null;
            if (_tail - _head == _slots.Length)
            {
                // The head slot is never a hole (holes at the head are skipped at once), so this is the oldest event.
                ref var oldest = ref _slots[_head % _slots.Length];
                pushedOut = oldest;
                oldest = null;
                _head++;
                _count--;
                SkipHoles();
            }

            _slots[_tail % _slots.Length] = flowEvent;
            _tail++;
            _count++;
            return pushedOut;
        }
    }

    /// <summary>Copies the oldest events (up to <paramref name="into"/>'s length) into <paramref name="into"/>, keeping them; returns how many.</summary>
    public int CopyOldest(Span<FlowEvent> into)
    {
        lock (_gate)
        {
            var copied = 0;
            for (var n = _head; n < _tail && copied < into.Length; n++)
            {
                if (_slots[n % _slots.Length] is { } flowEvent)
                {
                    into[copied++] = flowEvent;
                }
            }

            return copied;
        }
    }

    /// <summary>
    /// Deletes the events of <paramref name="batch"/> whose IDs <paramref name="ids"/> lists (all of them when it is
    /// null) and returns how many it deleted. An event no longer held (pushed out meanwhile) is not counted.
    /// </summary>
    public int Remove(ReadOnlySpan<FlowEvent> batch, IReadOnlyCollection<Guid>? ids)
    {
        var wanted = new HashSet<FlowEvent>(ReferenceEqualityComparer.Instance);
        HashSet<Guid>? acknowledged = ids is null ? null : [.. ids];
        foreach (var flowEvent in batch)
        {
            if (acknowledged is null || acknowledged.Contains(flowEvent.Id))
            {
                wanted.Add(flowEvent);
            }
        }

        if (wanted.Count == 0)
        {
            return 0;
        }

        lock (_gate)
        {
            var removed = 0;
            for (var n = _head; n < _tail && wanted.Count > 0; n++)
            {
                ref var slot = ref _slots[n % _slots.Length];
                if (slot is not null && wanted.Remove(slot))
                {
                    slot = null;
                    removed++;
                }
            }

            _count -= removed;
            SkipHoles();
            if (_tail - _head > _count)
            {
                Pack();
            }

            return removed;
        }
    }

    /// <summary>Empties the store; returns how many events it held.</summary>
    public int Clear()
    {
        lock (_gate)
        {
            var held = _count;
            Array.Clear(_slots);
            _head = _tail = 0;
            _count = 0;
            return held;
        }
    }

    private void SkipHoles()
    {
        while (_head < _tail && _slots[_head % _slots.Length] is null)
        {
            _head++;
        }
    }

    // Moves the held events towards the tail, in order, so the slots between _head and _tail are all events again.
    private void Pack()
    {
        var write = _tail - 1;
        for (var read = _tail - 1; read >= _head; read--)
        {
            if (_slots[read % _slots.Length] is { } flowEvent)
            {
                _slots[read % _slots.Length] = null;
                _slots[write % _slots.Length] = flowEvent;
                write--;
            }
        }

        _head = write + 1;
    }
}
